"""/v1/projects/{ref}/types/typescript: the TypeScript types of the project's schemas
(`{"types": "..."}`), as `supabase gen types typescript --project-id` asks for them.

The catalog is read in one read-only statement through the project's agent (api.typescript
says what is read and how it maps); nothing is stored, so each call reads the database as it is."""

from ninja import Router

from api import typescript
from api.access import project_for
from api.database import read_only_query
from api.errors import ApiError
from api.schemas import Message, TypesOut

router = Router(tags=["database"])


@router.get(
    "/{ref}/types/typescript",
    response={200: TypesOut, 400: Message, 404: Message, 502: Message, 504: Message},
    summary="TypeScript types of the project's schemas, for supabase-js",
)
def typescript_types(request, ref: str, included_schemas: str = "public"):
    project = project_for(request, ref)
    try:
        schemas = typescript.parse_schemas(included_schemas)
    except typescript.BadSchemas as error:
        raise ApiError(400, str(error)) from None
    [catalog] = read_only_query(project, typescript.catalog_sql(schemas), what="Type generation")
    return {"types": typescript.render(schemas, catalog)}
