"""The TypeScript `Database` type of a project's schemas, as `supabase gen types typescript` writes
it and supabase-js reads it: per schema `Tables` (`Row`, `Insert`, `Update`, `Relationships`),
`Views`, `Functions` (`Args`, `Returns`), `Enums` and `CompositeTypes`, with the `Json` type and
the `Tables`/`TablesInsert`/`TablesUpdate`/`Enums` helpers.

`catalog_sql` reads what the generator needs in one read-only statement (one row, JSON columns);
`render` is pure. Postgres types map as supabase-js expects: numbers (`int*`, `float*`,
`numeric`), `boolean`, `Json` (`json`, `jsonb`), arrays as `T[]`, enums and composite types by
reference into `Database`, everything else (text, uuid, dates and times, ...) `string`.
Insert: a column is optional when it is nullable or has a default (identity included); a
generated column is `never`. Update: every column optional.
"""

import json
import re

NUMBER = {"int2", "int4", "int8", "float4", "float8", "numeric", "oid", "money"}
STRING = {
    "text", "varchar", "bpchar", "char", "name", "uuid", "citext", "date", "time", "timetz", "timestamp",
    "timestamptz", "interval", "bytea", "inet", "cidr", "macaddr", "macaddr8", "tsvector", "tsquery", "xml",
    "bit", "varbit", "regclass", "regproc", "regtype", "pg_lsn",
}  # fmt: skip
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


class BadSchemas(ValueError):
    pass


def parse_schemas(included: str) -> list[str]:
    schemas = [part.strip() for part in included.split(",") if part.strip()]
    if not schemas:
        raise BadSchemas("included_schemas names no schema")
    for name in schemas:
        if not _SCHEMA_NAME.match(name):
            raise BadSchemas(f"included_schemas: {name!r} is not a schema name")
    return list(dict.fromkeys(schemas))


def catalog_sql(schemas: list[str]) -> str:
    """One row: relations, enums, composites, functions, relationships and the types they use."""
    wanted = "array[" + ", ".join(f"'{name}'" for name in schemas) + "]::text[]"
    return f"""
with ns as (select oid, nspname from pg_catalog.pg_namespace where nspname = any({wanted})),
rel as (
    select c.oid, n.nspname, c.relname, c.relkind
    from pg_catalog.pg_class c join ns n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'f') and not c.relispartition
),
col as (
    select a.attrelid, a.attnum, a.attname, a.atttypid, not a.attnotnull as nullable,
           a.atthasdef or a.attidentity <> '' as has_default, a.attgenerated <> '' as generated
    from pg_catalog.pg_attribute a join rel on rel.oid = a.attrelid
    where a.attnum > 0 and not a.attisdropped
),
fn as (
    select p.oid, n.nspname, p.proname, p.proretset, p.prorettype, p.pronargdefaults, p.pronargs,
           coalesce(p.proallargtypes, p.proargtypes::oid[]) as argtypes,
           coalesce(p.proargmodes, array_fill('i'::"char", array[p.pronargs])) as argmodes,
           coalesce(p.proargnames, array_fill(''::text, array[p.pronargs])) as argnames
    from pg_catalog.pg_proc p join ns n on n.oid = p.pronamespace
    where p.prokind = 'f' and p.prorettype <> 'pg_catalog.trigger'::regtype
      and p.prorettype <> 'pg_catalog.event_trigger'::regtype
      and not exists (select 1 from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')
),
comp as (
    select t.oid, n.nspname, t.typname, t.typrelid
    from pg_catalog.pg_type t join ns n on n.oid = t.typnamespace
    join pg_catalog.pg_class c on c.oid = t.typrelid
    where t.typtype = 'c' and c.relkind = 'c'
),
used as (
    select atttypid as oid from col
    union select unnest(argtypes) from fn
    union select prorettype from fn
    union select a.atttypid from pg_catalog.pg_attribute a join comp on comp.typrelid = a.attrelid
        where a.attnum > 0 and not a.attisdropped
),
typ as (
    select t.oid, t.typname, tn.nspname, t.typtype, t.typelem, t.typbasetype, t.typrelid,
           (select c.relkind from pg_catalog.pg_class c where c.oid = t.typrelid) as relkind
    from pg_catalog.pg_type t join pg_catalog.pg_namespace tn on tn.oid = t.typnamespace
    where t.oid in (select oid from used)
       or t.oid in (select t2.typelem from pg_catalog.pg_type t2 join used on used.oid = t2.oid)
       or t.oid in (select t2.typbasetype from pg_catalog.pg_type t2 join used on used.oid = t2.oid)
)
select
  (select coalesce(jsonb_agg(jsonb_build_object(
      'schema', rel.nspname, 'name', rel.relname, 'kind', rel.relkind,
      'columns', (select coalesce(jsonb_agg(jsonb_build_object(
          'name', col.attname, 'type', col.atttypid, 'nullable', col.nullable,
          'has_default', col.has_default, 'generated', col.generated) order by col.attnum), '[]'::jsonb)
        from col where col.attrelid = rel.oid)
    ) order by rel.nspname, rel.relname), '[]'::jsonb) from rel) as relations,
  (select coalesce(jsonb_agg(jsonb_build_object(
      'schema', n.nspname, 'name', t.typname,
      'values', (select jsonb_agg(e.enumlabel order by e.enumsortorder) from pg_catalog.pg_enum e
                 where e.enumtypid = t.oid)) order by n.nspname, t.typname), '[]'::jsonb)
    from pg_catalog.pg_type t join ns n on n.oid = t.typnamespace where t.typtype = 'e') as enums,
  (select coalesce(jsonb_agg(jsonb_build_object(
      'schema', comp.nspname, 'name', comp.typname,
      'attributes', (select coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', a.atttypid)
                     order by a.attnum), '[]'::jsonb)
                     from pg_catalog.pg_attribute a where a.attrelid = comp.typrelid and a.attnum > 0
                     and not a.attisdropped)) order by comp.nspname, comp.typname), '[]'::jsonb) from comp)
    as composites,
  (select coalesce(jsonb_agg(jsonb_build_object(
      'schema', fn.nspname, 'name', fn.proname, 'returns_set', fn.proretset, 'returns', fn.prorettype,
      'defaults', fn.pronargdefaults, 'inputs', fn.pronargs,
      'args', (select coalesce(jsonb_agg(jsonb_build_object('name', x.name, 'type', x.type, 'mode', x.mode)
                 order by x.i), '[]'::jsonb)
               from unnest(fn.argnames, fn.argtypes, fn.argmodes::text[]) with ordinality as x(name, type, mode, i))
    ) order by fn.nspname, fn.proname, fn.oid), '[]'::jsonb) from fn) as functions,
  (select coalesce(jsonb_agg(jsonb_build_object(
      'schema', n.nspname, 'table', c.relname, 'name', k.conname,
      'columns', (select jsonb_agg(a.attname order by x.i) from unnest(k.conkey) with ordinality x(num, i)
                  join pg_catalog.pg_attribute a on a.attrelid = k.conrelid and a.attnum = x.num),
      'referenced_relation', rc.relname,
      'referenced_columns', (select jsonb_agg(a.attname order by x.i)
                  from unnest(k.confkey) with ordinality x(num, i)
                  join pg_catalog.pg_attribute a on a.attrelid = k.confrelid and a.attnum = x.num),
      'one_to_one', exists (select 1 from pg_catalog.pg_index i where i.indrelid = k.conrelid
                  and i.indisunique and i.indpred is null
                  and (select array_agg(v order by v) from unnest(i.indkey::int2[]) v)
                      = (select array_agg(v order by v) from unnest(k.conkey) v))
    ) order by n.nspname, c.relname, k.conname), '[]'::jsonb)
    from pg_catalog.pg_constraint k
    join pg_catalog.pg_class c on c.oid = k.conrelid join ns n on n.oid = c.relnamespace
    join pg_catalog.pg_class rc on rc.oid = k.confrelid
    where k.contype = 'f') as relationships,
  (select coalesce(jsonb_agg(jsonb_build_object(
      'oid', typ.oid, 'name', typ.typname, 'schema', typ.nspname, 'kind', typ.typtype, 'elem', typ.typelem,
      'base', typ.typbasetype, 'relkind', typ.relkind)), '[]'::jsonb) from typ) as types
"""


def render(schemas: list[str], catalog: dict) -> str:
    # Oids arrive as JSON text (jsonb writes an oid as a string).
    types = {int(item["oid"]): item for item in catalog["types"]}
    enums = {(item["schema"], item["name"]) for item in catalog["enums"]}
    relations = {(item["schema"], item["name"]): item for item in catalog["relations"]}

    def ts(oid: int, in_schema: str) -> str:
        found = types.get(int(oid))
        if found is None:
            return "unknown"
        name, schema, kind = found["name"], found["schema"], found["kind"]
        if kind == "d":
            return ts(found["base"], in_schema)
        if kind == "b" and int(found["elem"]) and name.startswith("_"):
            return f"{_parenthesised(ts(found['elem'], in_schema))}[]"
        if kind == "e" and (schema, name) in enums:
            return f'Database["{schema}"]["Enums"]["{name}"]'
        if kind == "c":
            if found["relkind"] == "c" and schema in schemas:
                return f'Database["{schema}"]["CompositeTypes"]["{name}"]'
            related = relations.get((schema, name))
            if related is not None:
                return _object(
                    {
                        column["name"]: ts(column["type"], in_schema) + (" | null" if column["nullable"] else "")
                        for column in related["columns"]
                    }
                )
            return "Record<string, unknown>"
        if name in ("bool",):
            return "boolean"
        if name in NUMBER:
            return "number"
        if name in ("json", "jsonb"):
            return "Json"
        if name == "void":
            return "undefined"
        if name == "record":
            return "Record<string, unknown>"
        if name in STRING or kind == "e":
            return "string"
        return "unknown"

    out = [
        "export type Json =\n  | string\n  | number\n  | boolean\n  | null\n"
        "  | { [key: string]: Json | undefined }\n  | Json[]\n\n",
        "export type Database = {\n",
    ]
    for schema in schemas:
        relationships = [item for item in catalog["relationships"] if item["schema"] == schema]
        tables = [item for item in catalog["relations"] if item["schema"] == schema and item["kind"] in "rpf"]
        views = [item for item in catalog["relations"] if item["schema"] == schema and item["kind"] in "vm"]
        out.append(f"  {_key(schema)}: {{\n    Tables: ")
        out.append(_section({table["name"]: _table(table, relationships, ts, schema) for table in tables}, 6))
        out.append("\n    Views: ")
        out.append(_section({view["name"]: _view(view, ts, schema) for view in views}, 6))
        out.append("\n    Functions: ")
        out.append(_section(_functions([f for f in catalog["functions"] if f["schema"] == schema], ts, schema), 6))
        out.append("\n    Enums: ")
        out.append(
            _section(
                {
                    item["name"]: " | ".join(json.dumps(value) for value in item["values"] or []) or "never"
                    for item in catalog["enums"]
                    if item["schema"] == schema
                },
                6,
            )
        )
        out.append("\n    CompositeTypes: ")
        out.append(
            _section(
                {
                    item["name"]: _object(
                        {a["name"]: f"{ts(a['type'], schema)} | null" for a in item["attributes"]}, indent=8
                    )
                    for item in catalog["composites"]
                    if item["schema"] == schema
                },
                6,
            )
        )
        out.append("\n  }\n")
    out.append("}\n")
    out.append(HELPERS)
    return "".join(out)


def _table(table: dict, relationships: list[dict], ts, schema: str) -> str:
    row, insert, update = {}, {}, {}
    for column in table["columns"]:
        kind = ts(column["type"], schema)
        value = f"{kind} | null" if column["nullable"] else kind
        row[column["name"]] = value
        if column["generated"]:
            insert[column["name"] + "?"] = "never"
            update[column["name"] + "?"] = "never"
            continue
        optional = column["nullable"] or column["has_default"]
        insert[column["name"] + ("?" if optional else "")] = value
        update[column["name"] + "?"] = value
    links = [item for item in relationships if item["table"] == table["name"]]
    return _object(
        {
            "Row": _object(row, indent=10),
            "Insert": _object(insert, indent=10),
            "Update": _object(update, indent=10),
            "Relationships": _relationships(links),
        },
        indent=8,
    )


def _view(view: dict, ts, schema: str) -> str:
    row = {column["name"]: f"{ts(column['type'], schema)} | null" for column in view["columns"]}
    return _object({"Row": _object(row, indent=10), "Relationships": "[]"}, indent=8)


def _functions(functions: list[dict], ts, schema: str) -> dict:
    found: dict[str, list[str]] = {}
    for function in functions:
        inputs = [arg for arg in function["args"] if arg["mode"] in ("i", "b", "v")]
        outputs = [arg for arg in function["args"] if arg["mode"] in ("o", "b", "t")]
        optional_from = len(inputs) - (function["defaults"] or 0)
        if inputs and all(arg["name"] for arg in inputs):
            args = _object(
                {
                    arg["name"] + ("?" if index >= optional_from else ""): ts(arg["type"], schema)
                    for index, arg in enumerate(inputs)
                },
                indent=10,
            )
        elif inputs:
            args = "Record<string, unknown>"  # unnamed arguments cannot be called by name (RPC)
        else:
            args = "never"
        if outputs and function["returns_set"]:
            returns = _object({arg["name"]: ts(arg["type"], schema) for arg in outputs}, indent=10) + "[]"
        elif function["returns_set"]:
            returns = f"{_parenthesised(ts(function['returns'], schema))}[]"
        else:
            returns = ts(function["returns"], schema)
        found.setdefault(function["name"], []).append(_object({"Args": args, "Returns": returns}, indent=8))
    return {name: " | ".join(overloads) for name, overloads in found.items()}


def _relationships(links: list[dict]) -> str:
    if not links:
        return "[]"
    items = [
        "          {\n"
        f"            foreignKeyName: {json.dumps(link['name'])}\n"
        f"            columns: {json.dumps(link['columns'])}\n"
        f"            isOneToOne: {'true' if link['one_to_one'] else 'false'}\n"
        f"            referencedRelation: {json.dumps(link['referenced_relation'])}\n"
        f"            referencedColumns: {json.dumps(link['referenced_columns'])}\n"
        "          },\n"
        for link in links
    ]
    return "[\n" + "".join(items) + "        ]"


def _section(entries: dict, indent: int) -> str:
    if not entries:
        return "{\n" + " " * indent + "[_ in never]: never\n" + " " * (indent - 2) + "}"
    return _object(entries, indent=indent)


def _object(fields: dict, indent: int = 10) -> str:
    if not fields:
        return "{}"
    pad = " " * indent
    body = "".join(f"{pad}{_key(name)}: {value}\n" for name, value in fields.items())
    return "{\n" + body + " " * (indent - 2) + "}"


def _key(name: str) -> str:
    optional = name.endswith("?")
    bare = name[:-1] if optional else name
    key = bare if _IDENTIFIER.match(bare) else json.dumps(bare)
    return key + ("?" if optional else "")


def _parenthesised(kind: str) -> str:
    return f"({kind})" if " " in kind else kind


HELPERS = """
type DatabaseWithoutInternals = Omit<Database, "__InternalSupabase">

type DefaultSchema = DatabaseWithoutInternals[Extract<keyof Database, "public">]

export type Tables<
  DefaultSchemaTableNameOrOptions extends
    | keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
    ? keyof (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
        DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])
    : never = never,
> = DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? (DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"] &
      DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Views"])[TableName] extends {
      Row: infer R
    }
    ? R
    : never
  : DefaultSchemaTableNameOrOptions extends keyof (DefaultSchema["Tables"] & DefaultSchema["Views"])
    ? (DefaultSchema["Tables"] & DefaultSchema["Views"])[DefaultSchemaTableNameOrOptions] extends { Row: infer R }
      ? R
      : never
    : never

export type TablesInsert<
  DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"] | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never = never,
> = DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Insert: infer I
    }
    ? I
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends { Insert: infer I }
      ? I
      : never
    : never

export type TablesUpdate<
  DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"] | { schema: keyof DatabaseWithoutInternals },
  TableName extends DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
    ? keyof DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"]
    : never = never,
> = DefaultSchemaTableNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[DefaultSchemaTableNameOrOptions["schema"]]["Tables"][TableName] extends {
      Update: infer U
    }
    ? U
    : never
  : DefaultSchemaTableNameOrOptions extends keyof DefaultSchema["Tables"]
    ? DefaultSchema["Tables"][DefaultSchemaTableNameOrOptions] extends { Update: infer U }
      ? U
      : never
    : never

export type Enums<
  DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"] | { schema: keyof DatabaseWithoutInternals },
  EnumName extends DefaultSchemaEnumNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
    ? keyof DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"]
    : never = never,
> = DefaultSchemaEnumNameOrOptions extends { schema: keyof DatabaseWithoutInternals }
  ? DatabaseWithoutInternals[DefaultSchemaEnumNameOrOptions["schema"]]["Enums"][EnumName]
  : DefaultSchemaEnumNameOrOptions extends keyof DefaultSchema["Enums"]
    ? DefaultSchema["Enums"][DefaultSchemaEnumNameOrOptions]
    : never
"""
