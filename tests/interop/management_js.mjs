// One call of supabase-management-js (pinned in package.json) against Berth; prints JSON.
// Usage: node management_js.mjs ACTION [ARGS...] with BERTH_API_URL and BERTH_TOKEN set.
import { SupabaseManagementAPI } from "supabase-management-js";

const client = new SupabaseManagementAPI({ accessToken: process.env.BERTH_TOKEN, baseUrl: process.env.BERTH_API_URL });
const [action, ...args] = process.argv.slice(2);

const calls = {
  create: (org, name, engine, password) =>
    client.createAProject({
      name,
      organization_slug: org,
      db_pass: password,
      region: "us-east-1",
      postgres_engine: engine,
    }),
  pause: (ref) => client.pauseAProject(ref),
  restore: (ref) => client.restoreAProject(ref),
  health: (ref, services) => client.getServicesHealth(ref, { services: services.split(",") }),
  query: (ref, sql) => client.runAQuery(ref, { query: sql }),
};

try {
  const result = await calls[action](...args);
  console.log(JSON.stringify({ ok: true, status: result.status, data: result.data }));
} catch (error) {
  if (error.name !== "SupabaseManagementAPIError") throw error;
  console.log(JSON.stringify({ ok: false, status: error.status, message: error.message, data: error.data }));
}
