"""Remote model providers: the endpoints a graph may send text to, and where their keys live.

A workflow file is pure data that anyone may share, so it must never decide where a secret goes.
Endpoints and the environment variable that holds each one's key are the user's settings
(`providers` in the config); a graph only names a provider. A graph may also name an address
directly (`base_url`); such an endpoint gets no key, ever, and is contacted only when the user
approved it for this run (the studio asks; the CLI takes `--allow-endpoint URL`).

Invariants:
- A key is read from the environment only for a provider the user configured, at call time.
- An address the user has not configured or approved is refused with a message saying how to
  allow it; so is any address that is not http(s).
- Keys never appear in graphs, outputs, reports, manifests or logs (engine.recaption.openai_compat
  removes a key a server echoed back from every error and caption).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterable

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_env: str = ""  # the environment variable holding the key; "" = no key

    def to_json(self) -> dict[str, str]:
        return {"base_url": self.base_url, "api_key_env": self.api_key_env}


# Known out of the box; the user's `providers` setting adds to them or replaces them by name.
DEFAULT_PROVIDERS = {
    "ollama-local": Provider("ollama-local", "http://127.0.0.1:11434/v1"),
    "openai": Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
}


class EndpointRefused(Exception):
    """An endpoint the graph names that the user has not configured or approved."""

    def __init__(self, message: str, url: str = ""):
        super().__init__(message)
        self.url = url


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, no trailing slash: the form approvals are compared in."""
    parsed = urllib.parse.urlsplit(url.strip())
    path = parsed.path.rstrip("/")
    return urllib.parse.urlunsplit((parsed.scheme.lower(), parsed.netloc.lower(), path, "", ""))


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_provider_settings(data: Any) -> tuple[dict[str, Provider], list[str]]:
    """The providers a `providers` setting defines ({name: {base_url, api_key_env}}), and one
    message per entry that is not usable."""
    found: dict[str, Provider] = {}
    problems: list[str] = []
    if not isinstance(data, dict):
        return found, ["must be an object: {name: {base_url, api_key_env}}"]
    for name, entry in data.items():
        if not isinstance(entry, dict):
            problems.append(f"provider {name!r} must be an object with base_url and api_key_env")
            continue
        url, key_env = entry.get("base_url"), entry.get("api_key_env", "")
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            problems.append(f"provider {name!r}: base_url must be an http(s) address")
        elif not isinstance(key_env, str) or (key_env and not _ENV_NAME.fullmatch(key_env)):
            problems.append(f"provider {name!r}: api_key_env must be the NAME of an environment "
                            "variable (or empty for none)")
        else:
            found[str(name)] = Provider(str(name), url, key_env)
    return found, problems


def providers_from_settings(settings: dict[str, Any]) -> dict[str, Provider]:
    user, _ = check_provider_settings(settings.get("providers") or {})
    return {**DEFAULT_PROVIDERS, **user}


@dataclass(frozen=True)
class Endpoint:
    url: str
    key_env: str  # "" for an endpoint the graph named: it never gets a key
    provider: str  # "" for an endpoint the graph named


def resolve_endpoint(provider: str, base_url: str, settings: dict[str, Any],
                     approved: Iterable[str] = ()) -> Endpoint:
    """Where a node should send its request. Raises EndpointRefused saying how to allow it."""
    providers = providers_from_settings(settings)
    if not base_url.strip():
        chosen = providers.get(provider)
        if chosen is None:
            known = ", ".join(sorted(providers))
            raise EndpointRefused(f"no provider named {provider!r} in your settings (providers: "
                                  f"{known}); add it in Settings, or choose one of those")
        return Endpoint(chosen.base_url, chosen.api_key_env, chosen.name)
    url = normalise_url(base_url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise EndpointRefused(f"{base_url!r} is not an http(s) address", url)
    for chosen in providers.values():  # the graph spelled out one of the user's own providers
        if normalise_url(chosen.base_url) == url:
            return Endpoint(chosen.base_url, chosen.api_key_env, chosen.name)
    if url in {normalise_url(a) for a in approved}:
        return Endpoint(url, "", "")
    plain = " over plain http" if url.startswith("http:") and not is_loopback(url) else ""
    raise EndpointRefused(f"this workflow sends your prompt to {url}{plain}, which is not one of "
                          "your providers; approve it when the studio asks, run with "
                          f"--allow-endpoint {url}, or add it as a provider in Settings", url)


def endpoints_needing_approval(workflow: Any, settings: dict[str, Any],
                               approved: Iterable[str] = ()) -> list[str]:
    """The addresses a workflow's nodes name directly that the user has neither configured nor
    approved (what the studio asks about before a run, and the CLI refuses)."""
    needed: list[str] = []
    for node in workflow.nodes.values():
        url = node.inputs.get("base_url") if node.mode != "mute" else None
        if not isinstance(url, str) or not url.strip() or node.inputs.get("backend") not in (None, "openai"):
            continue
        try:
            resolve_endpoint("", url, settings, approved)
        except EndpointRefused as exc:
            if exc.url and exc.url not in needed:
                needed.append(exc.url)
    return needed
