"""A Model Context Protocol server over stdio, for tests: newline-delimited
JSON-RPC 2.0 on stdin/stdout, the same tools, resources and prompts as the
HTTP one in mcp.rs, plus `whoami` (its folder and whether a variable of the
parent reached it). It writes a line on stderr when it starts."""

import json
import os
import sys

count = 0


def tool_result(text, structured=None, error=False):
    result = {"content": [{"type": "text", "text": text}], "isError": error}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def handle(method, params):
    global count
    if method == "initialize":
        return {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
            "serverInfo": {"name": "stdio-test-server", "version": "1.0.0"},
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": [
            {"name": "echo", "description": "Echo the text",
             "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
            {"name": "add", "description": "Add two numbers",
             "inputSchema": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}},
            {"name": "count", "description": "Calls on this connection so far",
             "inputSchema": {"type": "object", "properties": {}}},
            {"name": "fail", "description": "Always an error",
             "inputSchema": {"type": "object", "properties": {}}},
            {"name": "whoami", "description": "The folder and what reached the environment",
             "inputSchema": {"type": "object", "properties": {}}},
        ]}
    if method == "tools/call":
        name = params.get("name")
        args = params.get("arguments") or {}
        if name == "echo":
            return tool_result("echo: " + str(args.get("text", "")))
        if name == "add":
            total = args.get("a", 0) + args.get("b", 0)
            return tool_result(str(total), {"sum": total})
        if name == "count":
            count += 1
            return tool_result(str(count))
        if name == "fail":
            return tool_result("it broke", error=True)
        if name == "whoami":
            return tool_result(os.getcwd(), {
                "cwd": os.getcwd(),
                "pid": os.getpid(),
                "secret": os.environ.get("MCP_TEST_SECRET"),
                "given": os.environ.get("GIVEN"),
            })
        raise KeyError("unknown tool " + str(name))
    if method == "resources/list":
        return {"resources": [{"uri": "mem://greeting", "name": "greeting", "mimeType": "text/plain"}]}
    if method == "resources/read":
        if params.get("uri") != "mem://greeting":
            raise KeyError("no resource " + str(params.get("uri")))
        return {"contents": [{"uri": "mem://greeting", "mimeType": "text/plain", "text": "hello"}]}
    if method == "prompts/list":
        return {"prompts": [{"name": "greet", "description": "Greet someone",
                             "arguments": [{"name": "name", "required": True}]}]}
    if method == "prompts/get":
        who = (params.get("arguments") or {}).get("name", "nobody")
        return {"description": "Greet someone", "messages": [
            {"role": "user", "content": {"type": "text", "text": "Say hello to " + who}}]}
    raise LookupError(method)


def main():
    print("stdio test server started", file=sys.stderr, flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        if "id" not in msg:
            continue  # a notification
        try:
            reply = {"jsonrpc": "2.0", "id": msg["id"], "result": handle(msg.get("method"), msg.get("params") or {})}
        except LookupError as e:
            code = -32601 if isinstance(e, LookupError) and not isinstance(e, KeyError) else -32602
            reply = {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": code, "message": str(e)}}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


main()
