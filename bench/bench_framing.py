"""Benchmark: frame decode+parse and encode+serialize rates against bare protobuf parse/serialize of the same
messages in the same run, plus the in-memory server dispatch path (decode, gate, parse, handler, reply).

Run: .venv/bin/python bench/bench_framing.py [--n 200000] [--runs 7]
Prints medians of several runs of process CPU time (steadier than wall time on a shared machine); the goal
is that framing adds < 30% over bare protobuf.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PER_READ = 32  # frames per socket read in the dispatch benchmark
sys.path.insert(0, str(ROOT))

from runtime.framing import FrameDecoder, append_frame  # noqa: E402


def messages(chat_bytes: int) -> tuple[str, list[tuple[int, int, Any]]]:
    """(source, [(service id, command id, message)]): TeamTalk messages of typical sizes."""
    try:
        from generated.teamtalk import IM_Message_pb2 as msg_pb2
        from generated.teamtalk import IM_Other_pb2 as other_pb2
    except ImportError:
        sys.path.insert(0, str(ROOT / "tests" / "unit" / "runtime"))
        import rt_testproto as tp

        chat = tp.MsgData(
            from_user_id=1001, to_session_id=1002, msg_id=123456, msg_type=1, msg_data=b"x" * chat_bytes
        )
        return "test protocol", [
            (3, 0x0301, chat),
            (7, 0x0701, tp.HeartBeat()),
            (3, 0x0302, tp.MsgDataAck(user_id=1001, session_id=1002, msg_id=123456)),
        ]
    chat = msg_pb2.IMMsgData(
        from_user_id=1001,
        to_session_id=1002,
        msg_id=123456,
        create_time=1700000000,
        msg_type=1,
        msg_data=b"x" * chat_bytes,
    )
    ack = msg_pb2.IMMsgDataAck(user_id=1001, session_id=1002, msg_id=123456, session_type=1)
    return "generated teamtalk", [(3, 0x0301, chat), (7, 0x0701, other_pb2.IMHeartBeat()), (3, 0x0302, ack)]


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return statistics.median(samples)


def paired(a: Callable[[], object], b: Callable[[], object], runs: int) -> tuple[float, float]:
    """Medians of a and b, measured alternately so a busy machine slows both alike."""
    ta, tb = [], []
    for _ in range(runs):
        ta.append(timed(a, 1))
        tb.append(timed(b, 1))
    return statistics.median(ta), statistics.median(tb)


def bench_codec(n: int, runs: int, chat_bytes: int) -> None:
    source, (chat, heartbeat, ack) = messages(chat_bytes)
    # The msg server's mix: chats and their acks, a heartbeat every tenth frame.
    batch = [heartbeat if i % 10 == 9 else (ack if i % 2 else chat) for i in range(n)]
    bodies = [(sid, cid, m.SerializeToString(), type(m)) for sid, cid, m in batch]
    stream = bytearray()
    for sid, cid, body, _cls in bodies:
        append_frame(stream, sid, cid, 1, body)
    wire = bytes(stream)
    chunks = [wire[i : i + 65536] for i in range(0, len(wire), 65536)]  # reads as a socket would deliver them
    classes = {cid: cls for _sid, cid, _b, cls in bodies}
    # Long-lived objects (the test data here; sessions and tables in a server) go to the permanent generation,
    # so the collector's cost reflects the frames and messages being made, not the size of the fixture.
    gc.collect()
    gc.freeze()

    def bare_parse() -> None:
        for _sid, _cid, body, cls in bodies:
            cls.FromString(body)

    def frame_parse() -> None:
        decoder = FrameDecoder()
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                classes[frame.command_id].FromString(frame.body)

    def bare_serialize() -> None:
        for _sid, _cid, m in batch:
            m.SerializeToString()

    def frame_serialize() -> None:
        # As a connection does: frames appended to an output buffer, taken as one write every PER_READ frames.
        out = bytearray()
        for i, (sid, cid, m) in enumerate(batch):
            append_frame(out, sid, cid, 1, m.SerializeToString())
            if i % PER_READ == PER_READ - 1:
                bytes(out)
                out.clear()

    print(
        f"messages: {source}; {n} per run (chat {chat_bytes} B, acks, heartbeats), "
        f"{len(wire) / n:.1f} wire B/frame; median of {runs} runs"
    )
    for label, bare, framed in (
        ("parse", bare_parse, frame_parse),
        ("serialize", bare_serialize, frame_serialize),
    ):
        tb, tf = paired(bare, framed, runs)
        print(
            f"  {label:9s} bare protobuf {n / tb / 1e6:6.2f} M msg/s | "
            f"with framing {n / tf / 1e6:6.2f} M msg/s | "
            f"framing adds {100 * (tf - tb) / tb:5.1f}% ({(tf - tb) / n * 1e9:.0f} ns/frame)"
        )


def msg_data_policy() -> dict[str, Any]:
    """The bundled spec's CID_MSG_DATA policy (dedup, send-wait, input rules, ...), with a rate that never
    throttles the benchmark."""
    try:
        from generated.teamtalk.registry import REGISTRY
    except ImportError:
        return {}
    stages = {k: dict(v) for k, v in REGISTRY.by_id(0x0301).stages.items()}
    stages["input"]["rate"] = "1000000/s"
    stages["transport"]["dedup_window"] = "1s"
    return stages


def bench_dispatch(n: int, runs: int) -> None:
    """Frames through Link + Connection + Dispatcher (stages, handler, reply) on an in-memory transport."""
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "runtime"))
    import rt_testproto as tp

    from runtime.connection import Kind
    from runtime.dispatch import Context, Dispatcher
    from runtime.transport import Link

    class Sink(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.bytes = 0

        def write(self, data: Any) -> None:
            self.bytes += len(data)

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 1) if name == "peername" else default

        def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
            pass

    class Service:
        __mapping__ = {0x0301: "on_msg", 0x0103: "on_login"}

        async def on_login(self, ctx: Context, msg: Any) -> Any:
            ctx.authenticate(1, 1)
            return tp.LoginRes(result_code=0)

        async def on_msg(self, ctx: Context, msg: Any) -> Any:
            return tp.MsgDataAck(user_id=ctx.user_id, session_id=msg.to_session_id, msg_id=msg.msg_id)

    async def main() -> None:
        for label, policy in (
            ("no stage policy", {}),
            (
                "input policy (rate, reject rules)",
                {"input": {"rate": "1000000/s", "reject": ["self_message", "empty_body"]}},
            ),
            ("TeamTalk MSG_DATA policy (all stages)", msg_data_policy()),
        ):
            registry = tp.build_registry({"MSG_DATA": policy})
            dispatcher = Dispatcher(registry, Service())
            # Distinct messages (msg_id and seq vary), so a dedup window sees no duplicates.
            stream = bytearray()
            for i in range(n):
                body = tp.MsgData(from_user_id=1, to_session_id=2, msg_id=i, msg_type=1, msg_data=b"x" * 100)
                append_frame(stream, 3, 0x0301, i % 0xFFFF + 1, body.SerializeToString())
            size = len(stream) // n * PER_READ
            reads = [bytes(stream[i : i + size]) for i in range(0, len(stream), size)]

            def run_once(registry: Any = registry, dispatcher: Any = dispatcher, reads: Any = reads) -> None:
                link = Link(registry, Kind.CLIENT_SESSION, dispatcher)
                link.connection_made(Sink())
                assert link.conn is not None
                link.conn.authenticate(1, 1)
                for chunk in reads:
                    link.data_received(chunk)

            t = timed(run_once, runs)
            print(f"  dispatch, {label:38s}: {n / t / 1e3:7.1f} k req+reply/s ({t / n * 1e6:.2f} us each)")

    print(f"server dispatch path (test protocol, {n} requests per run, 32 frames per read):")
    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for chat_bytes in (100, 1000):
        bench_codec(args.n, args.runs, chat_bytes)
    bench_dispatch(args.n // 2, args.runs)


if __name__ == "__main__":
    main()
