"""A migration set written for supabase.com pushes cleanly, with the official CLI, to a project
created through the Management API (the `postgres` template on the process driver), and the
CLI's `inspect report` and `db advisors` complete on it: the project's database has the roles,
schemas, extensions and helpers of a Supabase project (runtimes/postgres/supabase.sql)."""

import json

import psycopg
import pytest

from operations.creation import create_project
from orgs.actions import create_token
from orgs.models import Organization
from projects.models import Project
from tests.api_helpers import make_user
from tests.interop.conftest import PASSWORD
from tests.interop.test_supabase_cli import shown_connection_string
from tests.interop.test_supabase_cli_linked import DOMAIN, POOLER, linked_stack, routed  # noqa: F401 (a fixture)
from tests.stack import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# As supabase.com's own guides write them (the user-management starter, storage, realtime).
MIGRATIONS = {
    "20260101000000_profiles.sql": """
create extension if not exists "uuid-ossp" with schema extensions;

create table public.profiles (
  id uuid not null references auth.users (id) on delete cascade primary key,
  username text unique,
  avatar_url text,
  updated_at timestamptz default now()
);
alter table public.profiles enable row level security;
create policy "Public profiles are viewable by everyone." on public.profiles for select using (true);
create policy "Users can insert their own profile." on public.profiles for insert with check ((select auth.uid()) = id);
create policy "Users can update own profile." on public.profiles for update using ((select auth.uid()) = id);
grant select on public.profiles to anon;
grant select, insert, update on public.profiles to authenticated;

create function public.handle_new_user() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  insert into public.profiles (id, username) values (new.id, new.raw_user_meta_data ->> 'username');
  return new;
end;
$$;
create trigger on_auth_user_created after insert on auth.users
  for each row execute procedure public.handle_new_user();
""",
    "20260101000100_todos_and_avatars.sql": """
create table public.todos (
  id uuid default uuid_generate_v4() primary key,
  user_id uuid references auth.users not null default auth.uid(),
  task text check (char_length(task) > 3),
  inserted_at timestamptz default timezone('utc'::text, now()) not null
);
alter table public.todos enable row level security;
create policy "Individuals can view their own todos." on public.todos for select using ((select auth.uid()) = user_id);
create policy "Individuals can create todos." on public.todos for insert with check ((select auth.uid()) = user_id);
alter publication supabase_realtime add table public.todos;
select extensions.gen_random_uuid();

insert into storage.buckets (id, name, public) values ('avatars', 'avatars', true);
create policy "Avatar images are publicly accessible." on storage.objects for select using (bucket_id = 'avatars');
create policy "Anyone can upload an avatar." on storage.objects for insert with check (bucket_id = 'avatars');
""",
}


def test_a_supabase_migration_set_pushes_and_inspect_and_advisors_complete(stack):
    token = create_token(make_user("dana"), name="cli")[1]
    stack.cli("orgs", "create", "Movers", token=token)
    [org] = stack.cli_json("orgs", "list", token=token)
    ref = stack.cli_json(
        "projects",
        "create",
        "Moved",
        "--org-id",
        org["id"],
        "--db-password",
        PASSWORD,
        "--region",
        "us-east-1",
        token=token,
    )["ref"]
    wait_for(
        lambda: Project.objects.get(ref=ref).status == "ACTIVE_HEALTHY", timeout=120, interval=2, what=f"{ref} healthy"
    )
    project = Project.objects.get(ref=ref)
    assert project.template == "postgres"
    url = shown_connection_string(project)

    workdir = stack.tmp_path / "moved"
    workdir.mkdir()
    stack.cli("init", "--yes", token=token, cwd=workdir)
    migrations = workdir / "supabase" / "migrations"
    migrations.mkdir(exist_ok=True)
    for name, text in MIGRATIONS.items():
        (migrations / name).write_text(text)
    pushed = stack.cli("db", "push", "--db-url", url, "--yes", token=token, cwd=workdir)
    said = pushed.stdout + pushed.stderr
    assert "Finished supabase db push" in said
    assert all(f"Applying migration {name}" in said for name in MIGRATIONS), said

    with psycopg.connect(url, sslmode="require", autocommit=True) as conn:
        # Supabase Auth's insert of a user runs the project's trigger, as on supabase.com.
        conn.execute(
            "insert into auth.users (id, email, raw_user_meta_data) values "
            """('00000000-0000-0000-0000-0000000000aa', 'a@example.com', '{"username": "ada"}')"""
        )
        assert conn.execute("select username from public.profiles").fetchall() == [("ada",)]
        with conn.transaction():
            conn.execute("set local role authenticated")
            conn.execute('set local request.jwt.claims = \'{"sub": "00000000-0000-0000-0000-0000000000aa"}\'')
            conn.execute("insert into public.todos (task) values ('move to Berth')")
            assert conn.execute("select count(*) from public.todos").fetchone() == (1,)
        with conn.transaction():
            conn.execute("set local role anon")
            assert conn.execute("select count(*) from public.todos").fetchone() == (0,)
        assert conn.execute("select public from storage.buckets where id = 'avatars'").fetchone() == (True,)

    # The CLI's type generation asks Berth's types/typescript for the project's schemas.
    generated = stack.cli("gen", "types", "typescript", "--project-id", ref, token=token, cwd=workdir)
    assert "export type Database = {" in generated.stdout
    assert "      profiles: {\n        Row: {\n          id: string\n          username: string | null\n" in (
        generated.stdout
    ), generated.stdout

    listing = stack.cli("migration", "list", "--db-url", url, token=token, cwd=workdir)
    assert listing.stdout.count("20260101000100") == 2  # local and remote

    report = stack.cli("inspect", "report", "--db-url", url, "--output-dir", "report", token=token, cwd=workdir)
    assert "Reports saved to" in report.stdout + report.stderr
    [day] = (workdir / "report").iterdir()
    outliers = (day / "outliers.csv").read_text()
    assert "query" in outliers.splitlines()[0]  # read from extensions.pg_stat_statements

    advisors = stack.cli("db", "advisors", "--db-url", url, "--type", "all", token=token, cwd=workdir, check=False)
    assert advisors.returncode == 0, advisors.stdout + advisors.stderr
    assert 'role "anon" does not exist' not in advisors.stdout + advisors.stderr


def test_db_advisors_linked_reads_the_projects_lints_from_the_management_api(linked_stack):  # noqa: F811
    """`db advisors --linked` (which connects to the database first, as every `--linked` command
    of the CLI 2.117 does) answers with Berth's lints of the project (advisors/security and
    /performance)."""
    stack = linked_stack
    token = create_token(make_user("erin"), name="cli")[1]
    stack.cli("orgs", "create", "Linted", token=token)
    [org] = stack.cli_json("orgs", "list", token=token)
    ref = create_project(
        name="Linted",
        postgres_major=15,
        template="postgres",
        organization=Organization.objects.get(slug=org["id"]),
        postgres_password=PASSWORD,
    ).ref
    wait_for(lambda: Project.objects.get(ref=ref).status == "ACTIVE_HEALTHY", timeout=120, interval=1, what="healthy")
    wait_for(lambda: routed(stack, ref), timeout=30, interval=0.5, what=f"{ref} routed")
    stack.resolve(f"db.{ref}.{DOMAIN}", POOLER)
    workdir = stack.tmp_path / "linted"
    workdir.mkdir()
    stack.cli("init", "--yes", token=token, cwd=workdir)
    stack.cli("link", "--project-ref", ref, token=token, cwd=workdir)

    def advised() -> set:
        said = stack.linked(
            "db",
            "advisors",
            "--linked",
            "--type",
            "all",
            "--level",
            "info",
            "--debug",  # names each API call on stderr
            token=token,
            cwd=workdir,
            password=PASSWORD,
        )
        assert f"/v1/projects/{ref}/advisors/security" in said.stderr, said.stderr
        assert f"/v1/projects/{ref}/advisors/performance" in said.stderr, said.stderr
        return {(lint["name"], lint["metadata"]["name"]) for lint in json.loads(said.stdout or "[]")}

    assert advised() == set()  # a new project's database has no findings
    (workdir / "supabase" / "migrations").mkdir(exist_ok=True)
    (workdir / "supabase" / "migrations" / "20260101000000_todos.sql").write_text(
        MIGRATIONS["20260101000100_todos_and_avatars.sql"] + "create table public.open_notes (id bigint primary key);\n"
    )
    # Without a password: a temporary login role, which steps up to postgres with SET ROLE and
    # must find uuid_generate_v4() (in `extensions`) unqualified, as postgres does.
    pushed = stack.linked("db", "push", "--linked", "--yes", token=token, cwd=workdir)
    assert "Initialising login role" in pushed.stderr
    # todos.user_id references auth.users with no index on it; open_notes has no RLS.
    assert advised() == {("unindexed_foreign_keys", "todos"), ("rls_disabled_in_public", "open_notes")}
