"""Drives a server through the client generated from openapi/openapi.json
(see scripts/client-check): every call goes through generated code, and
every answer is parsed into the generated models."""

import sys
import time
from uuid import UUID

from orchestrator_client import Client
from orchestrator_client.api.executions import (
    cancel_execution,
    create_execution,
    get_execution,
    list_executions,
    recover_execution,
)
from orchestrator_client.models import (
    ExecutionPage,
    ExecutionView,
    PipelineBodyType1,
    RecoverRequest,
    RecoverResult,
    SubmitRequest,
)
from orchestrator_client.models.submit_request_context_type_0 import SubmitRequestContextType0

FINISHED = {"succeeded", "failed", "cancelled"}

YAML = """name: client-hello
parameters:
  who: {type: string, default: world}
steps:
  - id: greet
    tool: echo
    parameters: {text: 'hello, {{ who }}'}
outputs:
  greeting: '{{ greet.text }}'
"""

AS_OBJECT = {
    "name": "client-object",
    "steps": [{"id": "say", "tool": "echo", "parameters": {"text": "from an object"}}],
    "outputs": {"said": "{{ say.text }}"},
}

WAITS = """name: client-waits
steps:
  - id: gate
    tool: approval-gate
    action: execute
    parameters: {title: 'Go?', content: 'x'}
"""

FAILS = """name: client-fails
steps:
  - id: read
    tool: filesystem
    action: read
    max_retries: 1
    parameters: {path: missing/input.txt}
"""


def expect(value, kind, what):
    if not isinstance(value, kind):
        raise SystemExit(f"{what}: expected {kind.__name__}, got {value!r}")
    return value


def submit(client, pipeline, context=None):
    body = SubmitRequest(pipeline=pipeline)
    if context is not None:
        body.context = SubmitRequestContextType0.from_dict(context)
    return expect(create_execution.sync(client=client, body=body), ExecutionView, "submit")


def wait(client, execution_id, until=FINISHED, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        x = expect(get_execution.sync(UUID(execution_id), client=client), ExecutionView, "get")
        if x.status in until or any(s.status in until for s in x.steps):
            return x
        if time.monotonic() > deadline:
            raise SystemExit(f"{execution_id} still {x.status} after {timeout}s")
        time.sleep(0.05)


def main(base):
    client = Client(base_url=base, raise_on_unexpected_status=True)

    text = submit(client, YAML, {"who": "Ada"})
    done = wait(client, text.id)
    assert done.status == "succeeded", done
    assert done.outputs.to_dict() == {"greeting": "hello, Ada"}, done.outputs

    obj = submit(client, PipelineBodyType1.from_dict(AS_OBJECT))
    done = wait(client, obj.id)
    assert done.status == "succeeded", done
    assert done.outputs.to_dict() == {"said": "from an object"}, done.outputs

    page = expect(list_executions.sync(client=client, limit=10), ExecutionPage, "list")
    ids = [e.id for e in page.items]
    assert text.id in ids and obj.id in ids, ids
    page = expect(
        list_executions.sync(client=client, pipeline="client-hello"), ExecutionPage, "filtered list"
    )
    assert [e.id for e in page.items] == [text.id], page

    waiting = submit(client, WAITS)
    wait(client, waiting.id, until={"waiting"})
    cancelled = expect(
        cancel_execution.sync(UUID(waiting.id), client=client), ExecutionView, "cancel"
    )
    assert cancelled.status == "cancelled", cancelled

    failing = submit(client, FAILS)
    done = wait(client, failing.id)
    assert done.status == "failed", done
    assert done.error.startswith("step 'read' failed"), done.error
    recovered = expect(
        recover_execution.sync(UUID(failing.id), client=client, body=RecoverRequest()),
        RecoverResult,
        "recover",
    )
    assert recovered.rerun == ["read"], recovered
    done = wait(client, failing.id)
    assert done.status == "failed", done
    print("generated client: submit (text, object), poll, list, cancel, recover: ok")


if __name__ == "__main__":
    main(sys.argv[1])
