"""Helpers for the Management API tests: users with memberships and tokens, and a bearer client."""

import json

from django.contrib.auth import get_user_model
from django.test import Client

from orgs.actions import create_token
from orgs.models import Membership, Organization, Role


def make_user(username: str, **fields):
    return get_user_model().objects.create_user(username, password=f"{username}-password", **fields)


def make_org(name: str = "Acme", **fields) -> Organization:
    return Organization.objects.create(name=name, **fields)


def join(user, org: Organization, role: str = Role.OWNER) -> Membership:
    return Membership.objects.create(organization=org, user=user, role=role)


def token_for(user, **kwargs) -> str:
    return create_token(user, name=kwargs.pop("name", "test"), **kwargs)[1]


class ApiClient:
    """Django's test client speaking JSON with `Authorization: Bearer <token>` and nothing else."""

    def __init__(self, token: str | None):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **params):
        return self.client.get(path, params, headers=self.headers)

    def post(self, path: str, body: dict | None = None):
        data = json.dumps(body) if body is not None else ""
        return self.client.post(path, data, content_type="application/json", headers=self.headers)

    def put(self, path: str, body: dict):
        return self.client.put(path, json.dumps(body), content_type="application/json", headers=self.headers)

    def patch(self, path: str, body: dict):
        return self.client.patch(path, json.dumps(body), content_type="application/json", headers=self.headers)

    def delete(self, path: str, body: dict | None = None):
        if body is None:
            return self.client.delete(path, headers=self.headers)
        return self.client.delete(path, json.dumps(body), content_type="application/json", headers=self.headers)


def api_as(user) -> ApiClient:
    return ApiClient(token_for(user))
