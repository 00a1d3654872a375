"""The agent's running modules import no Django, Celery, boto3, database or Redis client,
and no `cryptography` (only the short-lived keygen child loads it: about 11 MB of resident
memory the agent would otherwise keep for as long as it runs)."""

from tests.support.imports import top_level_packages

FORBIDDEN = ("django", "celery", "boto3", "botocore", "redis", "psycopg", "cryptography")


def test_running_agent_imports_no_server_library_and_no_cryptography():
    loaded = top_level_packages(
        "proxy_agent.cli",
        "proxy_agent.agent",
        "proxy_agent.relay",
        "proxy_agent.identity",
        "proxy_agent.envoy",
    )
    assert "proxy_agent" in loaded and "grpc" in loaded
    assert not loaded & set(FORBIDDEN), f"the agent imported {sorted(loaded & set(FORBIDDEN))}"
