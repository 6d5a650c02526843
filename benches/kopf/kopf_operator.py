"""A kopf operator on invite-operator's own CRD: the Python baseline of the throughput benchmark.

It does what a straightforward Python operator for `UserInvitation` does, and no more: per
resource one lookup of each user (concurrently), one invite call for the users not found, and
one status patch saying Ready. Endpoints and Secrets come from kopf indexes (watched, never
read per resource). Only the UserInvite API is spoken (`--api userinvite` in the benchmark).
It keeps none of invite-operator's exactly-once rules (no intent is recorded before the POST):
it is the baseline of speed, not of correctness.

The benchmark starts it as its `--operator-command` with these environment variables:
  KUBECONFIG       the cluster
  WATCH_NAMESPACE  the one namespace to serve
  METRICS_ADDR     host:port for `/readyz` (200 once kopf is ready) and `/metrics`, which
                   counts reconciles and API calls under invite-operator's metric names, so
                   that the benchmark reads both operators the same way.
"""

import asyncio
import base64
import datetime
import os
from collections import Counter

import aiohttp
import kopf
from aiohttp import web

GROUP, VERSION = "invite.operators.dev", "v1alpha1"

reconciles: Counter = Counter()
api_calls: Counter = Counter()
http: aiohttp.ClientSession | None = None


@kopf.index(GROUP, VERSION, "invitationendpoints")
def endpoints(name, spec, **_):
    return {name: dict(spec)}


@kopf.index("", "v1", "secrets")
def tokens(name, body, **_):
    token = (body.get("data") or {}).get("token")
    return {name: base64.b64decode(token).decode()} if token else None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready(patch, generation, status, reason, message):
    patch.status["conditions"] = [
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now(),
            "observedGeneration": generation,
        }
    ]
    patch.status["observedGeneration"] = generation


async def call(endpoint, method, url, token, **kwargs):
    async with http.request(
        method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs
    ) as answer:
        await answer.read()
        operation = "lookup" if method == "GET" else "invite"
        api_calls[(endpoint, operation, str(answer.status))] += 1
        return answer.status


@kopf.on.create(GROUP, VERSION, "userinvitations")
async def invite(spec, meta, patch, endpoints: kopf.Index, tokens: kopf.Index, **_):
    generation = meta.get("generation")
    ref = spec.get("endpointRef") or {}
    found = endpoints.get(ref.get("name"))
    if not found:
        reconciles["blocked"] += 1
        ready(patch, generation, "False", "EndpointNotFound", f"no endpoint {ref.get('name')}")
        return
    (endpoint,) = found
    secret = ((endpoint.get("credentials") or {}).get("secretRef") or {}).get("name")
    token = next(iter(tokens.get(secret, [])), None)
    if endpoint.get("api") != "UserInvite" or token is None:
        reconciles["error"] += 1
        ready(patch, generation, "False", "Unsupported", "UserInvite with a token only")
        return
    base = endpoint["url"].rstrip("/") + "/api/v2/user"
    emails = [u["emailAddress"] for u in spec.get("users", [])]
    name = ref["name"]
    codes = await asyncio.gather(*(call(name, "GET", f"{base}/{e}", token) for e in emails))
    missing = [e for e, code in zip(emails, codes) if code == 404]
    if missing:
        body = [{"emailAddress": e, "groups": [], "userGroups": [], "roles": []} for e in missing]
        code = await call(name, "POST", f"{base}/invite", token, json=body)
        if code >= 300:
            reconciles["error"] += 1
            raise kopf.TemporaryError(f"invite answered {code}", delay=1)
    reconciles["ok"] += 1
    ready(patch, generation, "True", "Invited", f"{len(emails)} users invited")


def exposition() -> str:
    lines = ["# TYPE invite_operator_reconciles_total counter"]
    for result, n in reconciles.items():
        lines.append(f'invite_operator_reconciles_total{{result="{result}"}} {n}')
    lines.append("# TYPE invite_operator_api_calls_total counter")
    for (endpoint, operation, code), n in api_calls.items():
        lines.append(
            "invite_operator_api_calls_total"
            f'{{endpoint="{endpoint}",operation="{operation}",code="{code}"}} {n}'
        )
    return "\n".join(lines) + "\n"


async def main():
    global http
    http = aiohttp.ClientSession()
    ready_flag = asyncio.Event()

    async def readyz(_):
        return web.Response(status=200 if ready_flag.is_set() else 503)

    async def metrics(_):
        return web.Response(text=exposition())

    app = web.Application()
    app.add_routes([web.get("/readyz", readyz), web.get("/metrics", metrics)])
    runner = web.AppRunner(app)
    await runner.setup()
    host, port = os.environ["METRICS_ADDR"].rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    await kopf.operator(
        standalone=True,
        namespaces=[os.environ["WATCH_NAMESPACE"]],
        ready_flag=ready_flag,
    )


if __name__ == "__main__":
    asyncio.run(main())
