-- The database of a Supabase project: the roles, schemas, extensions and grants a project on
-- supabase.com has before its owner writes a migration, so migrations written there run here
-- unchanged (and back). Written by Berth from the structure the Supabase Postgres image
-- documents (github.com/supabase/postgres, migrations/db); Berth owns and versions it with the
-- `postgres` template. The agent's process driver runs it as the `postgres` superuser, in one
-- transaction, after the cluster starts, whenever this file differs from the copy it last ran
-- (`postgres.init_sql` in runtime.toml): at provisioning, and when a rollout brings a new
-- revision of it to an existing project.
--
-- Every statement is idempotent and touches only what it creates: it runs again on databases
-- whose owners have written into them. It never sets a password (roles without one cannot log
-- in; the `pgbouncer` role's is the agent's pooler's, per host) and never moves or replaces
-- an object a project already has (an extension created in `public` stays there).

-- Roles ------------------------------------------------------------------------------------------
DO $roles$
DECLARE
    wanted text[][] := ARRAY[
        -- PostgREST's three request roles, chosen by a request's JWT `role` claim.
        ['anon', 'NOLOGIN'],                  -- requests without a user (the anon key)
        ['authenticated', 'NOLOGIN'],         -- requests with a signed-in user's JWT
        ['service_role', 'NOLOGIN BYPASSRLS'],  -- the service key: past row-level security
        -- PostgREST logs in as this role and switches to one of the three above.
        ['authenticator', 'LOGIN NOINHERIT'],
        -- The platform's own superuser (Studio, migrations of the platform's services).
        ['supabase_admin', 'SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS'],
        -- Supabase Auth (GoTrue) and the Storage API log in as these and own their schemas.
        ['supabase_auth_admin', 'LOGIN NOINHERIT CREATEROLE NOREPLICATION'],
        ['supabase_storage_admin', 'LOGIN NOINHERIT CREATEROLE NOREPLICATION'],
        -- Studio's role for the table editor.
        ['dashboard_user', 'NOLOGIN NOSUPERUSER CREATEDB CREATEROLE REPLICATION']
    ];
    pair text[];
BEGIN
    FOREACH pair SLICE 1 IN ARRAY wanted LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = pair[1]) THEN
            EXECUTE format('CREATE ROLE %I %s', pair[1], pair[2]);
        END IF;
    END LOOP;
    -- PgBouncer's auth_query role: created here when missing, never altered, since the agent's
    -- pooler sets its password (this host's) and may have made it first.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgbouncer') THEN
        CREATE ROLE pgbouncer LOGIN;
    END IF;
END
$roles$;

-- Request roles inherit what is granted to them (Supabase's 2023 change) and have the
-- platform's statement timeouts; authenticator may become any of them.
ALTER ROLE anon INHERIT;
ALTER ROLE authenticated INHERIT;
ALTER ROLE service_role INHERIT;
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';
ALTER ROLE authenticator SET statement_timeout = '8s';
ALTER ROLE authenticator SET lock_timeout = '8s';
GRANT anon, authenticated, service_role TO authenticator;
-- The project's owner (`postgres`) may act as the request roles, as on supabase.com (to test
-- policies with `set role authenticated`), and as the services' roles.
GRANT anon, authenticated, service_role, supabase_auth_admin, supabase_storage_admin TO postgres;
-- The Storage API checks a request's policies as the request's role.
GRANT anon, authenticated, service_role, authenticator TO supabase_storage_admin;

-- The search path of a Supabase project: extensions are called unqualified.
ALTER ROLE postgres SET search_path TO "$user", public, extensions;
ALTER ROLE supabase_admin SET search_path TO "$user", public, auth, extensions;
ALTER ROLE supabase_auth_admin SET search_path TO auth;
ALTER ROLE supabase_storage_admin SET search_path TO storage;

-- public: what PostgREST exposes. Every table, function and sequence created there by the
-- project's owner (or the platform) is granted to the request roles; row-level security
-- decides which rows they reach.
GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;

-- extensions: where a Supabase project's extensions live, out of the API's schema. -------------
CREATE SCHEMA IF NOT EXISTS extensions;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;
GRANT ALL ON SCHEMA extensions TO dashboard_user;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;  -- uuid_generate_v4()
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;     -- gen_random_uuid(), crypt()
DO $stat$
BEGIN
    -- Query statistics (`supabase inspect`, the performance advisor); the agent preloads its
    -- library wherever the installation ships it.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_stat_statements') THEN
        CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA extensions;
    END IF;
END
$stat$;

-- graphql_public: the schema pg_graphql's HTTP entry point lives in; exposed by PostgREST.
CREATE SCHEMA IF NOT EXISTS graphql_public;
GRANT USAGE ON SCHEMA graphql_public TO postgres, anon, authenticated, service_role;

-- Realtime: the publication Realtime streams changes from; migrations add tables to it.
DO $realtime$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = 'supabase_realtime') THEN
        CREATE PUBLICATION supabase_realtime;
    END IF;
END
$realtime$;

-- auth: Supabase Auth's schema (its service migrates it further when it runs). ------------------
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;

-- One row per user, with the columns Supabase Auth writes; projects reference auth.users(id).
CREATE TABLE IF NOT EXISTS auth.users (
    instance_id uuid,
    id uuid NOT NULL PRIMARY KEY,
    aud varchar(255),
    role varchar(255),
    email varchar(255),
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    invited_at timestamptz,
    confirmation_token varchar(255),
    confirmation_sent_at timestamptz,
    recovery_token varchar(255),
    recovery_sent_at timestamptz,
    email_change_token_new varchar(255),
    email_change varchar(255),
    email_change_sent_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz,
    updated_at timestamptz,
    phone text UNIQUE DEFAULT NULL,
    phone_confirmed_at timestamptz,
    phone_change text DEFAULT '',
    phone_change_token varchar(255) DEFAULT '',
    phone_change_sent_at timestamptz,
    confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
    email_change_token_current varchar(255) DEFAULT '',
    email_change_confirm_status smallint DEFAULT 0 CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2),
    banned_until timestamptz,
    reauthentication_token varchar(255) DEFAULT '',
    reauthentication_sent_at timestamptz,
    is_sso_user boolean NOT NULL DEFAULT false,
    deleted_at timestamptz,
    is_anonymous boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE auth.users IS 'Auth: Stores user login data within a secure schema.';
CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users (instance_id);
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users (is_anonymous);
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;

-- Supabase Auth's record of its own migrations.
CREATE TABLE IF NOT EXISTS auth.schema_migrations (version varchar(255) NOT NULL PRIMARY KEY);
COMMENT ON TABLE auth.schema_migrations IS 'Auth: Manages updates to the auth system.';

-- The request's JWT, as PostgREST sets it: `request.jwt.claims` (a JSON object, PostgREST 9 and
-- later) or one `request.jwt.claim.<name>` setting per claim (earlier versions, and what
-- projects' tests set by hand).
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;
COMMENT ON FUNCTION auth.jwt() IS 'The request''s JWT claims (PostgREST''s request.jwt.claims).';
-- The signed-in user's id (the `sub` claim): what row-level-security policies compare.
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;
COMMENT ON FUNCTION auth.uid() IS 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
-- The request's role claim: anon, authenticated or service_role.
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;
COMMENT ON FUNCTION auth.role() IS 'Deprecated. Use auth.jwt() -> ''role'' instead.';
-- The signed-in user's email claim.
CREATE OR REPLACE FUNCTION auth.email() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;
COMMENT ON FUNCTION auth.email() IS 'Deprecated. Use auth.jwt() -> ''email'' instead.';

ALTER TABLE auth.users OWNER TO supabase_auth_admin;
ALTER TABLE auth.schema_migrations OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.jwt() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.uid() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.role() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.email() OWNER TO supabase_auth_admin;
-- Policies call the helpers as the request roles; the owner's migrations reference and
-- trigger on auth.users; the schema's rows are read through the API by nobody else.
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, postgres;
GRANT ALL ON SCHEMA auth TO supabase_auth_admin, dashboard_user;
GRANT ALL ON ALL TABLES IN SCHEMA auth TO supabase_auth_admin, dashboard_user, postgres;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA auth TO anon, authenticated, service_role, postgres, dashboard_user;

-- storage: the Storage API's schema (its service migrates it further when it runs). -------------
CREATE SCHEMA IF NOT EXISTS storage AUTHORIZATION supabase_admin;

-- One row per bucket; `insert into storage.buckets (id, name, public)` is how migrations make one.
CREATE TABLE IF NOT EXISTS storage.buckets (
    id text NOT NULL PRIMARY KEY,
    name text NOT NULL,
    owner uuid,  -- deprecated by Storage in favour of owner_id
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    public boolean DEFAULT false,
    avif_autodetection boolean DEFAULT false,
    file_size_limit bigint,
    allowed_mime_types text[],
    owner_id text
);
CREATE UNIQUE INDEX IF NOT EXISTS bname ON storage.buckets (name);

-- One row per stored object; policies on it decide who may read and write files.
CREATE TABLE IF NOT EXISTS storage.objects (
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    bucket_id text CONSTRAINT "objects_bucketId_fkey" REFERENCES storage.buckets (id),
    name text,
    owner uuid,  -- deprecated by Storage in favour of owner_id
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    last_accessed_at timestamptz DEFAULT now(),
    metadata jsonb,
    path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
    version text,
    owner_id text,
    user_metadata jsonb
);
CREATE UNIQUE INDEX IF NOT EXISTS bucketid_objname ON storage.objects (bucket_id, name);
CREATE INDEX IF NOT EXISTS name_prefix_search ON storage.objects (name text_pattern_ops);

-- The Storage API's record of its own migrations.
CREATE TABLE IF NOT EXISTS storage.migrations (
    id integer PRIMARY KEY,
    name varchar(100) UNIQUE NOT NULL,
    hash varchar(40) NOT NULL,
    executed_at timestamp DEFAULT current_timestamp
);

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.migrations ENABLE ROW LEVEL SECURITY;

-- Path helpers the Storage API and projects' storage policies call.
CREATE OR REPLACE FUNCTION storage.foldername(name text) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    _parts text[];
BEGIN
    SELECT string_to_array(name, '/') INTO _parts;
    RETURN _parts[1:array_length(_parts, 1) - 1];
END
$$;
CREATE OR REPLACE FUNCTION storage.filename(name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    _parts text[];
BEGIN
    SELECT string_to_array(name, '/') INTO _parts;
    RETURN _parts[array_length(_parts, 1)];
END
$$;
CREATE OR REPLACE FUNCTION storage.extension(name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    _parts text[];
    _filename text;
BEGIN
    SELECT string_to_array(name, '/') INTO _parts;
    SELECT _parts[array_length(_parts, 1)] INTO _filename;
    RETURN reverse(split_part(reverse(_filename), '.', 1));
END
$$;

ALTER TABLE storage.buckets OWNER TO supabase_storage_admin;
ALTER TABLE storage.objects OWNER TO supabase_storage_admin;
ALTER TABLE storage.migrations OWNER TO supabase_storage_admin;
ALTER FUNCTION storage.foldername(text) OWNER TO supabase_storage_admin;
ALTER FUNCTION storage.filename(text) OWNER TO supabase_storage_admin;
ALTER FUNCTION storage.extension(text) OWNER TO supabase_storage_admin;
GRANT USAGE ON SCHEMA storage TO postgres, anon, authenticated, service_role;
GRANT ALL ON SCHEMA storage TO supabase_storage_admin, dashboard_user;
GRANT ALL ON storage.buckets, storage.objects TO postgres, anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA storage TO supabase_storage_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA storage TO postgres, anon, authenticated, service_role, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_storage_admin IN SCHEMA storage
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_storage_admin IN SCHEMA storage
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_storage_admin IN SCHEMA storage
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;

-- pgbouncer: PgBouncer's auth_query function, the one the agent's pooler also installs when
-- missing (the same definition: a login role's SCRAM secret, none once it has expired). Made
-- here only when missing, so whichever ran first stands; the role's password is the pooler's.
CREATE SCHEMA IF NOT EXISTS pgbouncer AUTHORIZATION pgbouncer;
DO $pgbouncer$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_proc
        WHERE proname = 'get_auth' AND pronamespace = 'pgbouncer'::regnamespace
    ) THEN
        CREATE FUNCTION pgbouncer.get_auth(p_usename TEXT)
        RETURNS TABLE(username TEXT, password TEXT)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $func$
        BEGIN
            RETURN QUERY
            SELECT rolname::TEXT, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword::TEXT END
            FROM pg_catalog.pg_authid
            WHERE rolname = p_usename AND rolcanlogin;
        END;
        $func$;
    END IF;
END
$pgbouncer$;
REVOKE ALL ON FUNCTION pgbouncer.get_auth(TEXT) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbouncer TO pgbouncer;
GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(TEXT) TO pgbouncer;

-- Studio's role reaches the project's database and the platform's schemas.
GRANT ALL ON DATABASE postgres TO dashboard_user;
