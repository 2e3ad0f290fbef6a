"""A user node pack used by the tests: loaded only because the tests name this folder."""

import os
import time

from engine.schema import Input, NodeSpec, NodeType, Output
from engine.sockets import SocketType as T


class CrashProcess(NodeType):
    """Kill the whole process (simulates a segfault or an out-of-memory kill in a worker)."""

    spec = NodeSpec(name="CrashProcess", category="testing", description=__doc__,
                    inputs=(Input("value", T.INT, 0), Input("after_seconds", T.FLOAT, 0.2)),
                    outputs=(Output("value", T.INT),))

    @classmethod
    def execute(cls, ctx, value, after_seconds):
        time.sleep(after_seconds)
        os._exit(3)


class IgnoreInterrupt(NodeType):
    """A long node that never checks for interrupts (a badly written third-party node)."""

    spec = NodeSpec(name="IgnoreInterrupt", category="testing", description=__doc__,
                    inputs=(Input("seconds", T.FLOAT, 30.0),), outputs=(Output("value", T.INT),))

    @classmethod
    def execute(cls, ctx, seconds):
        time.sleep(seconds)
        return {"value": 1}


class SayWarning(NodeType):
    """An output node that only says something to the user through the run log."""

    spec = NodeSpec(name="SayWarning", category="testing", description=__doc__, is_output=True,
                    inputs=(Input("message", T.STRING, "mind the gap"),))

    @classmethod
    def execute(cls, ctx, message):
        ctx.log("warning", message)
        return {}
