"""Weight patches and replicas: the patch format round trip, the server's patch log and API, and
a real replica process following 500 publications through a channel that drops, duplicates,
reorders and corrupts 5% of them, answering inference all along."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import requests
import torch
import waitress
from conftest import repo_root

from cl_server.api import create_app
from cl_server.config import parse_config
from cl_server.deploy import ENV_DATA_DIR
from cl_server.patches import KEEP_SNAPSHOTS, PatchLog
from cl_server.store import MongoStore
from plugin.replica.patch import (
    PatchError,
    apply,
    decode,
    diff,
    encode,
    paper_bits,
    snapshot,
    state_sha256,
)

CONFIG = parse_config("""
name: digits
engine: {kind: triton, model_name: digits}
model: {template: mlp, input: {shape: [64]}, classes: ["0","1","2","3","4"]}
triggers: {rules: []}
""", env={})
META = {"format": "modelci-e/classifier/1", "template": "mlp", "input_shape": [64],
        "classes": ["0", "1", "2", "3", "4"], "params": {"hidden": [32]}}


def mlp_state(classes: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    from model_factory.templates.networks import build_network

    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_network("mlp", (64,), classes, hidden=[32])
            .state_dict().items()}


def nudge(state: dict[str, torch.Tensor], ratio: float, rng: torch.Generator
          ) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with ``ratio`` of each floating tensor's entries changed."""
    out = {k: v.clone() for k, v in state.items()}
    for tensor in out.values():
        if tensor.is_floating_point():
            flat = tensor.view(-1)
            k = max(1, round(ratio * flat.numel()))
            flat[torch.randperm(flat.numel(), generator=rng)[:k]] += torch.randn(k, generator=rng)
    return out


# -- the format --------------------------------------------------------------------------------

def test_round_trip_is_bit_exact_for_every_kind_of_tensor() -> None:
    rng = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(300, 40, generator=rng), "b": torch.zeros(7),
            "half": torch.randn(50, generator=rng).half(), "steps": torch.tensor(3),
            "mask": torch.zeros(20, dtype=torch.bool), "gone": torch.ones(2),
            "brain": torch.randn(9, generator=rng).bfloat16()}
    target = {k: v.clone() for k, v in base.items() if k != "gone"}
    target["w"].view(-1)[[0, 1, 5000, 11999]] = torch.tensor([1.0, -0.0, float("nan"), 3.5])
    target["half"][10] = 7.0
    target["steps"] += 1
    target["mask"][3] = True
    target["brain"][0] = 2.0
    target["head"] = torch.randn(3, 3, generator=rng)  # a new tensor travels whole
    target["b"] = torch.zeros(9)  # reshaped: whole
    patch = diff(base, target, base_version=4, target_version=5, meta=META)
    restored = decode(encode(patch))
    assert (restored.base_version, restored.target_version, restored.meta) == (4, 5, META)
    assert restored.removed == ["gone"]
    result = apply(base, restored)
    assert sorted(result) == sorted(target)
    for name, tensor in target.items():
        assert result[name].dtype == tensor.dtype and result[name].shape == tensor.shape
        assert result[name].view(-1).view(torch.uint8).equal(
            tensor.reshape(-1).view(torch.uint8)), name  # bit for bit, -0.0 and NaN included
    assert state_sha256(result) == patch.target_sha256 == state_sha256(target)
    w = next(c for c in restored.changes if c.name == "w")
    assert w.indices.tolist() == [0, 1, 5000, 11999]
    assert next(c for c in restored.changes if c.name == "b").full


def test_fp16_values_halve_the_bytes_and_the_checksum_is_of_the_rounded_state() -> None:
    rng = torch.Generator().manual_seed(2)
    base = {"w": torch.randn(100_000, generator=rng)}
    target = nudge(base, 0.01, rng)
    full, half = (diff(base, target, base_version=1, target_version=2, values=v)
                  for v in ("fp32", "fp16"))
    assert len(encode(half)) < 0.75 * len(encode(full))
    result = apply(base, decode(encode(half)))
    assert state_sha256(result) == half.target_sha256 != full.target_sha256
    changed = full.changes[0].indices
    assert torch.equal(result["w"][changed], target["w"][changed].half().float())


def test_sizes_as_the_paper_counts_them_and_as_bytes() -> None:
    base = {"w": torch.zeros(1_000_000)}
    target = {"w": base["w"].clone()}
    target["w"][::1000] = 1.0  # k = 0.1%
    patch = diff(base, target, base_version=1, target_version=2)
    bits = paper_bits(patch)
    assert 32 * 1000 < bits < 32 * 1000 + 1000 * 12  # log2 C(1e6, 1e3) is about 11.4 kbit
    assert len(encode(patch)) < 0.02 * len(encode(snapshot(target, 2)))


def test_a_corrupt_patch_or_one_for_another_state_is_refused() -> None:
    rng = torch.Generator().manual_seed(3)
    base = mlp_state()
    target = nudge(base, 0.01, rng)
    blob = bytearray(encode(diff(base, target, base_version=1, target_version=2)))
    for position in (2, 40, len(blob) // 2, len(blob) - 1):
        broken = bytearray(blob)
        broken[position] ^= 0x10
        with pytest.raises(PatchError):
            decode(bytes(broken))
    with pytest.raises(PatchError, match="too short"):
        decode(b"MCIP")
    with pytest.raises(PatchError, match="another state"):
        apply(nudge(base, 0.01, rng), decode(bytes(blob)))


# -- the patch log and the server ---------------------------------------------------------------

def test_patch_log_orders_publications_rollbacks_included(tmp_path: Path) -> None:
    log = PatchLog(tmp_path, "digits")
    rng = torch.Generator().manual_seed(4)
    states = [mlp_state()]
    log.publish(1, states[0], meta=META)
    for version in range(2, 7):
        states.append(nudge(states[-1], 0.02, rng))
        log.publish(version, states[-1])
    log.publish(3, states[2])  # a rollback to version 3
    entries = log.entries()
    assert [(e.sequence, e.base_version, e.version) for e in entries] == [
        (1, 0, 1), (2, 1, 2), (3, 2, 3), (4, 3, 4), (5, 4, 5), (6, 5, 6), (7, 6, 3)]
    assert entries[-1].sha256 == state_sha256(states[2])
    state: dict[str, torch.Tensor] = {}
    for entry in entries:
        state = apply(state, decode(log.patch_bytes(entry.sequence)))
    assert state_sha256(state) == state_sha256(states[2])
    assert len(list((tmp_path / "services/digits/patches").glob("snapshot-*"))) == KEEP_SNAPSHOTS
    assert decode(log.snapshot_bytes()).meta == META


def test_q8_publications_round_afresh_from_the_published_state(tmp_path: Path) -> None:
    """With q8 values each publication is the difference from the state replicas hold (the
    rounded one), so after many publications a replica is within half a code step of the true
    weights, not a sum of every step's error."""
    log = PatchLog(tmp_path, "digits")
    rng = torch.Generator().manual_seed(5)
    states = [mlp_state()]
    log.publish(1, states[0], meta=META, values="q8")
    for version in range(2, 12):
        states.append(nudge(states[-1], 0.05, rng))
        log.publish(version, states[-1], values="q8")
    held: dict[str, torch.Tensor] = {}
    for entry in log.entries():
        patch = decode(log.patch_bytes(entry.sequence))
        held = apply(held, patch)  # checks the base and the result against the server's
        assert entry.values == "q8" and state_sha256(held) == entry.sha256
    last = decode(log.patch_bytes(log.entries()[-1].sequence))
    steps = {c.name: c.scale for c in last.changes if c.scale is not None}
    assert steps, "the last publication sent q8 codes"
    for name, step in steps.items():
        error = float((held[name] - states[-1][name]).abs().max())
        assert error <= step / 2 * 1.001 + 1e-6, name
    assert state_sha256(held) != state_sha256(states[-1])  # rounded, as documented


@pytest.mark.parametrize("values", ["fp16", "q8"])
def test_rounded_publications_do_not_resend_what_replicas_hold(tmp_path: Path,
                                                              values: str) -> None:
    """The published state is the rounded one while the server's weights stay exact: entries
    whose rounding gives what replicas hold already are not sent again, so patches do not grow
    with every publication."""
    log = PatchLog(tmp_path, "digits")
    rng = torch.Generator().manual_seed(7)
    state = mlp_state()
    log.publish(1, state, meta=META, values=values)  # type: ignore[arg-type]
    for version in range(2, 12):
        state = nudge(state, 0.01, rng)  # 24 weights a publication
        log.publish(version, state, values=values)  # type: ignore[arg-type]
    written = [entry.changed for entry in log.entries()[1:]]
    assert max(written) <= 2 * 24, written  # fp16 used to re-send every rounded entry: 227


@pytest.fixture
def server(store: MongoStore, redis_url: str, tokens: dict[str, str], tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, PatchLog, dict[str, str]]]:
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "data"))
    cache = redis.Redis.from_url(redis_url)
    app = create_app(CONFIG, store, cache)
    http = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{http.effective_port}", PatchLog(tmp_path / "data", "digits"),
               tokens)
    finally:
        http.close()
        thread.join(timeout=5)
        cache.close()


def test_patch_api(server: tuple[str, PatchLog, dict[str, str]]) -> None:
    url, log, tokens = server
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    empty = requests.get(f"{url}/api/services/digits/patches", headers=viewer, timeout=10)
    assert empty.json() == {"service": "digits", "latest": None, "patches": []}
    state = mlp_state()
    log.publish(1, state, meta=META)
    log.publish(2, nudge(state, 0.01, torch.Generator().manual_seed(5)))
    listing = requests.get(f"{url}/api/services/digits/patches?since=1", headers=viewer,
                           timeout=10).json()
    assert [p["sequence"] for p in listing["patches"]] == [2]
    assert listing["latest"]["version"] == 2
    blob = requests.get(f"{url}/api/services/digits/patches/2", headers=viewer, timeout=10)
    assert blob.headers["Content-Type"] == "application/octet-stream"
    assert decode(blob.content).sequence == 2
    snap = requests.get(f"{url}/api/services/digits/snapshot", headers=viewer, timeout=10)
    assert decode(snap.content).target_sha256 == listing["latest"]["sha256"]
    for path, status in (("/patches/9", 404), ("/snapshot?sequence=9", 404),
                         ("/patches?since=-1", 422)):
        answer = requests.get(f"{url}/api/services/digits{path}", headers=viewer, timeout=10)
        assert answer.status_code == status, path
        assert "error" in answer.json()
    assert requests.get(f"{url}/api/services/digits/patches/1", timeout=10).status_code == 401
    assert requests.get(f"{url}/api/services/nope/patches", headers=viewer,
                        timeout=10).status_code == 404


# -- a real replica through a faulty channel ----------------------------------------------------

class FaultyChannel:
    """An HTTP relay to the server that faults 5% of the patches it passes on: drops one from a
    listing, lists it twice, swaps it with its neighbour, or corrupts one byte of its body."""

    def __init__(self, upstream: str, rate: float = 0.05, seed: int = 0):
        self.upstream = upstream
        self.rate = rate
        self.random = random.Random(seed)
        self.faults = {"dropped": 0, "duplicated": 0, "reordered": 0, "corrupted": 0}
        self.lock = threading.Lock()
        channel = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # the name http.server calls
                answer = requests.get(channel.upstream + self.path, timeout=30,
                                      headers={"Authorization": self.headers["Authorization"]})
                body = channel.fault(self.path, answer.content) if answer.ok else answer.content
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def fault(self, path: str, body: bytes) -> bytes:
        with self.lock:
            if "/patches?" in path:
                listing = json.loads(body)
                out = []
                for entry in listing["patches"]:
                    if self.random.random() >= self.rate:
                        out.append(entry)
                        continue
                    kind = self.random.choice(["dropped", "duplicated", "reordered"])
                    self.faults[kind] += 1
                    if kind == "duplicated":
                        out += [entry, entry]
                    elif kind == "reordered":
                        out.insert(max(0, len(out) - 1), entry)
                listing["patches"] = out
                return json.dumps(listing).encode()
            if "/patches/" in path and self.random.random() < self.rate:
                self.faults["corrupted"] += 1
                broken = bytearray(body)
                broken[self.random.randrange(len(broken))] ^= 0xFF
                return bytes(broken)
            return body

    def close(self) -> None:
        self.http.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_replica_follows_500_faulty_publications_and_never_serves_a_bad_state(
        server: tuple[str, PatchLog, dict[str, str]], tmp_path: Path) -> None:
    url, log, tokens = server
    rng = torch.Generator().manual_seed(6)
    state = mlp_state()
    log.publish(1, state, meta=META)
    channel = FaultyChannel(url)
    port = free_port()
    swaps, replica_log = tmp_path / "swaps.jsonl", open(tmp_path / "replica.log", "w")  # noqa: SIM115
    replica = subprocess.Popen(
        [sys.executable, "-m", "plugin.cli", "replica", "--server", channel.url, "--service",
         "digits", "--port", str(port), "--poll", "0.05", "--swap-log", str(swaps)],
        cwd=repo_root(), env={**os.environ, "MODELCI_TOKEN": tokens["viewer"],
                              "OMP_NUM_THREADS": "1"},
        stdout=replica_log, stderr=subprocess.STDOUT)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def ask() -> None:  # inference all along: every answer must come from a published state
        body = {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                            "data": [0.1] * 128}]}
        while not stop.is_set():
            try:
                answer = requests.post(f"http://127.0.0.1:{port}/v2/models/digits/infer",
                                       json=body, timeout=10)
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if answer.status_code == 200:
                reply = answer.json()
                assert reply["outputs"][0]["shape"][0] == 2
                answers.append((reply["parameters"]["sequence"], reply["parameters"]["sha256"]))

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    try:
        deadline = time.monotonic() + 60  # every one of the 499 patches goes through the relay
        while time.monotonic() < deadline and not answers:
            assert replica.poll() is None, (tmp_path / "replica.log").read_text()[-3000:]
            time.sleep(0.1)
        assert answers, "the replica never answered"
        classes = 5
        for version in range(2, 501):
            if version in (200, 400):  # new classes: the head grows, whole tensors travel
                classes += 1
                grown = mlp_state(classes, seed=version)
                state = {k: (v if grown[k].shape == v.shape else grown[k])
                         for k, v in state.items()}
                meta = {**META, "classes": [str(c) for c in range(classes)]}
                log.publish(version, state, meta=meta)
            else:  # publications 250-349 carry q8 codes: the replica adds, not sets, those
                state = nudge(state, 0.01, rng)
                log.publish(version, state, values="q8" if 250 <= version < 350 else "fp32")
            time.sleep(0.005)
        deadline = time.monotonic() + 180
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/replica/status",
                                      timeout=5).json()
            except requests.RequestException:
                status = {}
            if status.get("sequence") == 500:
                break
            assert replica.poll() is None, (tmp_path / "replica.log").read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(0.3)  # a few more answers from the final state
    finally:
        stop.set()
        asker.join(timeout=15)
        replica.terminate()
        try:
            replica.wait(timeout=15)
        except subprocess.TimeoutExpired:
            replica.kill()
        channel.close()
        replica_log.close()
    published = {e.sequence: e.sha256 for e in log.entries()}
    assert sum(e.values == "q8" for e in log.entries()) == 100
    assert status.get("sequence") == 500, (status, (tmp_path / "replica.log").read_text()[-3000:])
    # bit-identical; the fp32 publications after the q8 ones carried their rounding away
    assert status["sha256"] == published[500] == state_sha256(state)
    assert all(count > 0 for count in channel.faults.values()), channel.faults
    assert sum(channel.faults.values()) >= 0.03 * 500, channel.faults
    assert status["duplicates"] > 0 and status["corrupt"] > 0, status
    assert status["applied"] + status["snapshots"] >= 499, status  # patches, not shortcuts
    swapped = [json.loads(line) for line in swaps.read_text().splitlines()]
    assert swapped[-1]["sequence"] == 500
    assert all(s["sha256"] == published[s["sequence"]] for s in swapped)
    assert [s["sequence"] for s in swapped] == sorted(s["sequence"] for s in swapped)
    assert len(answers) > 50
    assert all(published.get(sequence) == sha for sequence, sha in answers)
    print(f"faults injected {channel.faults}; replica {status}; {len(answers)} answers, "
          f"{len(swapped)} states served")


def test_replica_http_answers_and_refuses_bad_requests(
        server: tuple[str, PatchLog, dict[str, str]]) -> None:
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from plugin.replica.agent import ReplicaAgent
    from plugin.replica.server import replica_app

    url, log, tokens = server
    agent = ReplicaAgent(url, "digits", token=tokens["viewer"])

    async def exercise() -> None:
        async with TestClient(TestServer(replica_app(agent))) as client:
            assert (await client.get("/v2/health/ready")).status == 503
            infer = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                 "data": [0.0] * 64}]}
            assert (await client.post("/v2/models/digits/infer", json=infer)).status == 503
            state = mlp_state()
            log.publish(1, state, meta=META)
            assert agent.sync() == 0 and agent.status()["snapshots"] == 1  # started from it
            log.publish(2, nudge(state, 0.01, torch.Generator().manual_seed(7)))
            assert agent.sync() == 1 and agent.status()["version"] == 2
            answer = await client.post("/v2/models/digits/infer", json=infer)
            reply = await answer.json()
            assert answer.status == 200 and reply["model_version"] == "2"
            assert reply["outputs"][0]["shape"] == [1, 5]
            assert abs(sum(reply["outputs"][0]["data"]) - 1) < 1e-5
            assert reply["parameters"]["sha256"] == log.latest().sha256
            meta = await (await client.get("/v2/models/digits")).json()
            assert meta["versions"] == ["2"] and meta["inputs"][0]["shape"] == [-1, 64]
            bad = [({"inputs": []}, "one tensor"),
                   ({"inputs": [{**infer["inputs"][0], "shape": [1, 63]}]}, "does not fit"),
                   ({"inputs": [{**infer["inputs"][0], "data": [0.0] * 3}]}, "holds 3"),
                   ({"inputs": [{**infer["inputs"][0], "datatype": "BYTES"}]}, "datatype"),
                   ({"inputs": [{**infer["inputs"][0], "data": ["a"] * 64}]}, "numbers")]
            for body, message in bad:
                refused = await client.post("/v2/models/digits/infer", json=body)
                assert refused.status == 400 and message in (await refused.json())["error"]
            garbage = await client.post("/v2/models/digits/infer", data=b"{not json")
            assert garbage.status == 400
            other = await client.post("/v2/models/other/infer", json=infer)
            assert other.status == 404 and "digits" in (await other.json())["error"]

    asyncio.run(exercise())


def _format_1(header: dict, body: bytes) -> bytes:
    """A format-1 blob (as earlier releases wrote them): JSON header, body, trailer."""
    import hashlib
    import struct

    head = json.dumps(header, separators=(",", ":")).encode()
    content = b"MCIP" + struct.pack("<HH", 1, len(head)) + head + body
    return content + hashlib.sha256(content).digest()


def _format_1_header(base: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                     index_bytes: int) -> dict:
    return {"base_version": 1, "target_version": 2, "base_sha256": state_sha256(base),
            "target_sha256": state_sha256(target), "sequence": 7, "removed": [], "meta": META,
            "values": "fp32", "tensors": [{"name": "w", "shape": [1000], "dtype": "float32",
                                           "count": 3, "index_width": 1,
                                           "index_bytes": index_bytes,
                                           "value_dtype": "float32", "value_bytes": 12}]}


def test_format_1_patches_of_earlier_releases_still_apply() -> None:
    import zlib

    import numpy as np

    base = {"w": torch.zeros(1000)}
    target = {"w": base["w"].clone()}
    target["w"][[1, 2, 900]] = torch.tensor([1.0, -2.0, 3.0])
    gaps = zlib.compress(np.array([1, 1, 898], dtype="<u2").tobytes(), 6)
    header = _format_1_header(base, target, len(gaps))
    header["tensors"][0]["index_width"] = 2
    patch = decode(_format_1(header, gaps + target["w"][[1, 2, 900]].numpy().tobytes()))
    assert (patch.sequence, patch.meta) == (7, META)
    assert state_sha256(apply(base, patch)) == state_sha256(target)


def test_a_patch_whose_indices_inflate_beyond_their_count_is_refused() -> None:
    """A well-formed blob (valid trailer) whose index data would inflate to 100 MB is refused
    without inflating it, in either format."""
    import hashlib
    import struct
    import zlib

    base = {"w": torch.zeros(1000)}
    target = {"w": base["w"].clone()}
    target["w"][[1, 2, 3]] = 1.0
    bomb = zlib.compress(b"\x01" * 100_000_000, 9)
    blob = _format_1(_format_1_header(base, target, len(bomb)), bomb + bytes(12))
    with pytest.raises(PatchError, match="4 indices, expected 3"):
        decode(blob)
    # Format 2: a packed section that claims to unpack to more than deflate can yield.
    good = encode(diff(base, target, base_version=1, target_version=2))
    content = b"MCIP" + struct.pack("<HBII", 2, 1, len(bomb), 2_000_000_000) + bomb + bytes(12)
    with pytest.raises(PatchError, match="claims 2000000000 bytes"):
        decode(content + hashlib.sha256(content).digest())
    assert decode(good).changes[0].indices.tolist() == [1, 2, 3]


def _reframed(blob: bytes, section: bytes) -> bytes:
    """``blob`` (format 2) with its packed section replaced by ``section``, stored."""
    import hashlib
    import struct

    _, _, _, packed_len, _ = struct.unpack_from("<4sHBII", blob)
    raw = blob[15 + packed_len:-32]
    content = b"MCIP" + struct.pack("<HBII", 2, 0, len(section), len(section)) + section + raw
    return content + hashlib.sha256(content).digest()


def _section(blob: bytes) -> bytearray:
    import lzma
    import struct
    import zlib

    _, _, packing, packed_len, size = struct.unpack_from("<4sHBII", blob)
    packed = blob[15:15 + packed_len]
    if packing == 1:
        return bytearray(zlib.decompress(packed))
    if packing == 2:
        return bytearray(lzma.decompress(packed, format=lzma.FORMAT_RAW, filters=[
            {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]))
    return bytearray(packed)


def test_format_2_refuses_indices_out_of_range_or_order_and_bad_fields() -> None:
    import struct

    base = {"w": torch.zeros(1000), "b": torch.zeros(4)}
    target = {k: v.clone() for k, v in base.items()}
    target["w"][[5, 6, 700]] = 1.0
    blob = encode(diff(base, target, base_version=1, target_version=2))
    section = _section(blob)
    assert decode(_reframed(blob, bytes(section))).changes[0].indices.tolist() == [5, 6, 700]
    header_len = struct.unpack_from("<I", section)[0]
    indices_at = 4 + header_len + 64
    assert section[indices_at:indices_at + 4] == bytes([5, 1, 0xB6, 0x05])  # 5, 1, 694
    cases = {bytes([5, 0, 0xB6, 0x05]): "out of order",        # a repeated index
             bytes([5, 1, 0xE6, 0x07]): "beyond its 1000",     # 5 + 1 + 998 = 1004
             bytes([5, 1, 0xB6, 0x85]): "ends after 2 of 3"}   # the last number never ends
    for stream, message in cases.items():
        broken = section[:indices_at] + stream + section[indices_at + 4:]
        with pytest.raises(PatchError, match=message):
            decode(_reframed(blob, bytes(broken)))
    header = json.loads(section[4:4 + header_len])
    for field, value, message in (("tensors", [["w", [1000], "float32", 3, "x", "float32"]],
                                   "unknown layout 'x'"),
                                  ("tensors", [["w", [10], "float32", 30, "s", "float32"]],
                                   "30 values for shape"),
                                  ("values", "int3", "unknown values")):
        changed = dict(header, **{field: value})
        head = json.dumps(changed).encode()
        broken = struct.pack("<I", len(head)) + head + section[4 + header_len:]
        with pytest.raises(PatchError, match=message):
            decode(_reframed(blob, bytes(broken)))


def test_q8_values_ship_int8_codes_of_the_change_and_apply_bit_exactly() -> None:
    rng = torch.Generator().manual_seed(4)
    base = {"w": torch.randn(200_000, generator=rng), "steps": torch.tensor(3),
            "d": torch.randn(50, dtype=torch.float64, generator=rng)}
    target = nudge(base, 0.01, rng)
    target["w"][7] += 1e-6  # far below half a code step: not sent
    target["steps"] += 1
    target["head"] = torch.randn(4, 3, generator=rng)  # new: travels whole, fp32
    exact = diff(base, target, base_version=1, target_version=2)
    q8 = diff(base, target, base_version=1, target_version=2, values="q8", meta=META)
    blob = encode(q8)
    assert len(blob) < 0.45 * len(encode(exact))
    restored = decode(blob)
    assert restored.values == "q8" and restored.meta == META
    result = apply(base, restored)  # checks both checksums
    assert state_sha256(result) == q8.target_sha256 == state_sha256(apply(base, q8))
    w = next(c for c in restored.changes if c.name == "w")
    assert w.values.dtype == torch.int8 and w.scale is not None and 7 not in w.indices.tolist()
    changed = next(c for c in exact.changes if c.name == "w").indices
    error = (result["w"] - target["w"])[changed].abs()
    assert float(error.max()) <= w.scale / 2 * 1.001 + 1e-6  # within half a code step
    untouched = torch.ones(len(base["w"]), dtype=torch.bool)
    untouched[changed] = False
    assert torch.equal(result["w"][untouched], base["w"][untouched])
    for name in ("steps", "d", "head"):  # not float32 sparse: exact
        assert torch.equal(result[name], target[name]), name
    assert paper_bits(q8) < 0.45 * paper_bits(exact)  # 8 bits a value, not 32; same indices


def test_q8_keeps_non_finite_changes_exact() -> None:
    base = {"w": torch.zeros(100)}
    target = {"w": base["w"].clone()}
    target["w"][[3, 4]] = torch.tensor([float("inf"), 0.5])
    patch = diff(base, target, base_version=1, target_version=2, values="q8")
    assert patch.changes[0].scale is None
    result = apply(base, decode(encode(patch)))
    assert torch.equal(result["w"], target["w"])


def test_index_varints_round_trip_at_every_length() -> None:
    import numpy as np

    from plugin.replica.patch import _read_varints, _varints

    rng = np.random.default_rng(0)
    edges = np.array([0, 1, 127, 128, 16383, 16384, (1 << 35) - 1, 1 << 35, (1 << 63) - 1],
                     dtype=np.uint64)
    for numbers in (edges, rng.integers(0, 2, 5000, dtype=np.uint64),  # all one byte
                    rng.integers(0, 1 << 40, 5000, dtype=np.uint64)):
        data = _varints(numbers)
        back, used = _read_varints(np.frombuffer(data + b"\x07\x09", dtype=np.uint8),
                                   len(numbers))
        assert used == len(data) and np.array_equal(back, numbers)
    assert len(_varints(edges)) == 1 + 1 + 1 + 2 + 2 + 3 + 5 + 6 + 9


def test_a_reinitialisation_ships_a_seed_and_the_changes_from_fresh_weights() -> None:
    from plugin.replica.patch import fresh_state

    rng = torch.Generator().manual_seed(6)
    base = nudge(mlp_state(), 0.5, rng)  # a trained model
    fresh = fresh_state(META, 11)
    assert state_sha256(fresh) == state_sha256(fresh_state(META, 11)) != \
        state_sha256(fresh_state(META, 12))
    target = nudge(fresh, 0.01, rng)  # DPU: a few weights of the fresh network trained
    patch = diff(base, target, base_version=3, target_version=4, meta=META, reinit=11)
    whole = diff(base, target, base_version=3, target_version=4, meta=META)
    blob = encode(patch)
    assert len(blob) < 0.1 * len(encode(whole))  # the seed, not every weight
    restored = decode(blob)
    assert restored.reinit == 11 and restored.base_sha256 == state_sha256(base)
    held = {k: v.clone() for k, v in base.items()}
    result = apply(held, restored, inplace=True)  # checks both checksums
    assert state_sha256(result) == state_sha256(target)
    assert state_sha256(held) == state_sha256(base)  # fresh weights, not the caller's tensors
    with pytest.raises(PatchError, match="another state"):
        apply(fresh, restored)  # still applies only after the publication before it
    broken = diff(base, target, base_version=3, target_version=4, meta=META, reinit=11)
    broken.meta = {"template": "no-such-net"}
    with pytest.raises(PatchError, match="does not name a network"):
        apply(base, broken, check=False)
