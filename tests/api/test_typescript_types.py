"""GET /v1/projects/{ref}/types/typescript?included_schemas=...: the `Database` type of a real
project database, compiled for real with TypeScript and supabase-js (pinned in
tests/interop/typescript, installed by scripts/interop): queries on existing columns, inserts,
RPC calls and enums compile; a missing column, a misspelt insert and a wrong enum value do not.
Without node or those packages the compile checks are SKIPPED, saying so."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api_helpers import api_as

pytestmark = pytest.mark.django_db

PACKAGES = Path(__file__).resolve().parents[1] / "interop" / "typescript" / "node_modules"
TSC = PACKAGES / ".bin" / "tsc"

SCHEMA = """
create type public.mood as enum ('happy', 'sad');
create type public.pair as (a int, b text);
create table public.people (
  id bigint generated always as identity primary key,
  name text not null,
  mood public.mood,
  tags text[] default '{}',
  meta jsonb,
  pair public.pair,
  created_at timestamptz not null default now(),
  shout text generated always as (upper(name)) stored
);
create table public.notes (
  id uuid primary key default gen_random_uuid(),
  person_id bigint not null references public.people (id),
  author uuid references auth.users (id),
  body text
);
create view public.loud as select id, shout from public.people;
create function public.add(a int, b int default 2) returns int language sql as 'select a + b';
create function public.everyone() returns setof public.people language sql as 'select * from public.people';
"""

GOOD = """
import { createClient } from "@supabase/supabase-js"
import type { Database, Tables, TablesInsert } from "./database.types"

const supabase = createClient<Database>("http://localhost:54321", "anon-key")

export async function uses() {
  const { data } = await supabase.from("people").select("id, name, mood, tags").eq("name", "ada")
  const name: string | undefined = data?.[0].name
  const mood: "happy" | "sad" | null | undefined = data?.[0].mood
  await supabase.from("people").insert({ name: "ada", mood: "happy" })
  await supabase.from("notes").insert({ person_id: 1, body: "hi" })
  const { data: joined } = await supabase.from("notes").select("body, people(name)")
  const sum = await supabase.rpc("add", { a: 1 })
  const total: number | null = sum.data
  const { data: view } = await supabase.from("loud").select("shout")
  const row: Tables<"people"> | undefined = undefined
  const insert: TablesInsert<"notes"> = { person_id: 2 }
  return [name, mood, joined, total, view, row, insert]
}
"""

# case -> (a line that must not compile, the TypeScript error it must give)
BAD = {
    "a missing column": (
        'const { data: all } = await supabase.from("people").select("*"); const x = all?.[0].missing',
        "error TS2339: Property 'missing' does not exist",
    ),
    "a misspelt insert": (
        'await supabase.from("people").insert({ nmae: "ada" })',
        "'nmae' does not exist in type",
    ),
    "a wrong enum value": (
        'await supabase.from("people").insert({ name: "ada", mood: "angry" })',
        """error TS2322: Type '"angry"' is not assignable""",
    ),
    "a generated column written": (
        'await supabase.from("people").insert({ name: "ada", shout: "ADA" })',
        "error TS2322: Type 'string' is not assignable to type 'undefined'",
    ),
}


def types_of(alice, owned_project, database_agent, database: str, schemas: str = "public"):
    database_agent.dbname = database
    return api_as(alice).get(f"/v1/projects/{owned_project.ref}/types/typescript?included_schemas={schemas}")


def compile_with(folder: Path, types: str, code: str) -> subprocess.CompletedProcess:
    folder.mkdir()
    (folder / "node_modules").symlink_to(PACKAGES)
    (folder / "database.types.ts").write_text(types)
    (folder / "use.ts").write_text(code)
    (folder / "tsconfig.json").write_text(
        '{"compilerOptions": {"strict": true, "noEmit": true, "target": "es2022", "module": "esnext",'
        ' "moduleResolution": "bundler", "skipLibCheck": true, "types": []}, "files": ["use.ts"]}'
    )
    return subprocess.run(
        [str(TSC), "-p", "tsconfig.json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": os.environ["PATH"]},
    )


def require_tsc():
    if shutil.which("node") is None or not TSC.exists():
        pytest.skip(
            "TYPESCRIPT COMPILE CHECK SKIPPED: node or tests/interop/typescript's packages missing (scripts/interop)"
        )


def test_the_types_compile_with_supabase_js_and_refuse_what_the_schema_has_not(
    alice, owned_project, database_agent, supabase_cluster, tmp_path
):
    response = types_of(alice, owned_project, database_agent, supabase_cluster.new_database(SCHEMA))
    assert response.status_code == 200, response.content
    types = response.json()["types"]
    assert "      people: {\n        Row: {\n          id: number\n          name: string\n" in types
    assert 'mood: "happy" | "sad"' in types
    require_tsc()

    good = compile_with(tmp_path / "good", types, GOOD)
    assert good.returncode == 0, good.stdout + good.stderr
    for case, (line, error) in BAD.items():
        code = GOOD.replace("  return [name,", f"  {line}\n  return [name,")
        bad = compile_with(tmp_path / case.replace(" ", "_"), types, code)
        assert bad.returncode != 0, f"{case} compiled"
        [said] = bad.stdout.splitlines()  # one error, on the line added, and nothing else
        assert said.startswith("use.ts(19,") and error in said, said


def test_a_new_projects_public_schema_gives_a_database_type_with_empty_sections(
    alice, owned_project, database_agent, supabase_cluster, tmp_path
):
    response = types_of(alice, owned_project, database_agent, supabase_cluster.new_database(), "public,storage")
    types = response.json()["types"]
    assert "    Tables: {\n      [_ in never]: never\n    }" in types  # public: nothing yet
    assert "      buckets: {" in types and "      objects: {" in types  # storage's tables
    require_tsc()
    code = (
        'import type { Database } from "./database.types"\n'
        'type Bucket = Database["storage"]["Tables"]["buckets"]["Row"]\n'
        'export const bucket: Pick<Bucket, "id" | "public"> = { id: "avatars", public: true }\n'
    )
    compiled = compile_with(tmp_path / "empty", types, code)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr


def test_a_malformed_schema_list_is_refused(alice, owned_project, database_agent):
    response = api_as(alice).get(f"/v1/projects/{owned_project.ref}/types/typescript?included_schemas=public;drop")
    assert response.status_code == 400
    assert "is not a schema name" in response.json()["message"]
    assert database_agent.specs == []
