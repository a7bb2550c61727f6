"""Talk to the assistant from a terminal: python docs/examples/chat_client.py [--url URL].

Creates a session (or resumes one with --token), then sends each line you type and prints
the reply as it streams. Uses only the standard library and `websockets`.
"""

import argparse
import asyncio
import json
import sys
import urllib.request
import uuid
from typing import Any

import websockets


def create_session(url: str, name: str) -> str:
    """POST /api/chat/sessions and return the new token."""
    request = urllib.request.Request(
        f"{url}/api/chat/sessions",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["token"]


def show(frame: dict[str, Any]) -> None:
    """Print one server frame the way a person wants to see it."""
    kind = frame["type"]
    if kind == "history":
        for message in frame["messages"]:
            print(f"[{message['role']}] {message['text'] or '(' + message['status'] + ')'}")
    elif kind == "delta":
        print(frame["text"], end="", flush=True)
    elif kind == "reply":
        print()
    elif kind == "error":
        print(f"\n! {frame['code']}: {frame['message']}")


async def chat(url: str, token: str) -> None:
    """Send typed lines and print streamed replies; at EOF, wait for the replies due."""
    ws_url = url.replace("http", "ws", 1) + f"/ws/chat/{token}"
    async with websockets.connect(ws_url, origin=url) as socket:
        show(json.loads(await socket.recv()))
        sent, answered = 0, 0
        all_answered = asyncio.Event()

        async def printer() -> None:
            nonlocal answered
            async for raw in socket:
                frame = json.loads(raw)
                show(frame)
                if frame["type"] == "reply" or frame.get("code") == "inference_failed":
                    answered += 1
                    if answered >= sent:
                        all_answered.set()

        task = asyncio.create_task(printer())
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip():
                sent += 1
                all_answered.clear()
                frame = {
                    "type": "message",
                    "text": line.rstrip("\n"),
                    "client_id": uuid.uuid4().hex,
                }
                await socket.send(json.dumps(frame))
        if answered < sent:
            await asyncio.wait_for(all_answered.wait(), timeout=120)
        task.cancel()


def main() -> None:
    """Parse arguments, create or resume a session, chat."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--name", default="terminal")
    parser.add_argument("--token", help="resume this session instead of creating one")
    args = parser.parse_args()
    token = args.token or create_session(args.url, args.name)
    print(f"session token: {token}  (Ctrl-D to quit)")
    asyncio.run(chat(args.url, token))


if __name__ == "__main__":
    main()
