"""The Management API (v1): the subset of Supabase's that the Supabase CLI and
supabase-management-js use, on django-ninja. See docs/architecture.md, "Management API"."""

from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from api.auth import TokenAuth
from api.errors import ApiError


class ManagementApi(NinjaAPI):
    def create_response(self, request, data, *, status=None, temporal_response=None):
        response = super().create_response(request, data, status=status, temporal_response=temporal_response)
        state = getattr(request, "rate_limit", None)
        if state is not None:
            for name, value in state.headers().items():
                response.setdefault(name, value)
        return response


api = ManagementApi(
    title="Berth Management API",
    version="1",
    description="The part of the Supabase Management API v1 that Berth serves.",
    auth=TokenAuth(),
    urls_namespace="api",
    docs_url=None,
    openapi_url="/openapi.json",
)


def _message(request, status: int, message: str, headers: dict | None = None):
    response = api.create_response(request, {"message": message}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return _message(request, exc.status, exc.message, exc.headers)


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return _message(request, 401, "Unauthorized: send a valid access token as 'Authorization: Bearer sbp_...'")


@api.exception_handler(NinjaValidationError)
def _invalid(request, exc: NinjaValidationError):
    details = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "payload", "query"))
        details.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return _message(request, 400, "Invalid request: " + "; ".join(details))


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    return _message(request, exc.status_code, str(exc))


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _message(request, 404, "Not found")


from api import advisors, backups, database, dbsettings, organizations, projects, typegen, upgrades  # noqa: E402  (routers register on `api`)

api.add_router("/organizations", organizations.router)
api.add_router("/projects", projects.router)
api.add_router("/projects", database.router)
api.add_router("/projects", upgrades.router)
api.add_router("/projects", backups.router)
api.add_router("/projects", dbsettings.router)
api.add_router("/projects", advisors.router)
api.add_router("/projects", typegen.router)
