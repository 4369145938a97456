"""Every call needs the agent's bearer token; a missing or wrong one learns nothing."""

import httpx
import pytest

from agent.client import AgentClient, AgentError, AgentUnauthorized

NO_DETAIL = {"error": {"code": "unauthorized", "message": "unauthorized"}}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["missing", "wrong", "other-scheme"],
)
@pytest.mark.parametrize("method, path", [("GET", "/v1/info"), ("POST", "/v1/health"), ("GET", "/no/such/route")])
def test_missing_or_wrong_tokens_get_401_without_detail(shared_agent, headers, method, path):
    reply = httpx.request(method, shared_agent.base_url + path, headers=headers, json={"probes": []})
    assert (reply.status_code, reply.json()) == (401, NO_DETAIL)


def test_the_right_token_is_accepted(shared_agent):
    reply = httpx.get(shared_agent.base_url + "/v1/info", headers={"Authorization": f"Bearer {shared_agent.token}"})
    assert reply.status_code == 200 and reply.json()["api_version"] == 1


def test_the_client_raises_unauthorized(shared_agent):
    with pytest.raises(AgentUnauthorized):
        AgentClient(shared_agent.base_url, "not-the-token-at-all", deadline=5).info()


@pytest.mark.parametrize("ref", ["Abcdefg", "abc", "1abcdef", "abc_def", "abc-defg", "a" * 41])
def test_runtime_refs_must_match_the_project_pattern(shared_agent, ref):
    with pytest.raises(AgentError) as refused:
        shared_agent.client().status(ref)
    assert (refused.value.status, refused.value.code) == (422, "invalid")
