"""`sparkle-fast plan`: weight bytes from safetensors headers, the model-major schedule, the fit decision."""

from __future__ import annotations

import json

import pytest
from real_size_models import write_real_size_models, write_sparse_safetensors

from sparkle_fast.driver.cli import main
from sparkle_fast.driver.config import load_config
from sparkle_fast.driver.plan import GIB, make_plan
from sparkle_fast.driver.step_graph import StepSpec, model_major_phases, step_graph
from sparkle_fast.models.weights import WeightsError, block_name, folder_weights


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_size_models")
    return root, write_real_size_models(root)


def test_folder_weights_reads_headers_only(tmp_path):
    nbytes = write_sparse_safetensors(tmp_path / "transformer" / "a.safetensors",
                                      {"blocks.0.attn.q.weight": ("BF16", (4096, 5120)),
                                       "blocks.0.ffn.weight": ("BF16", (5120, 13824)),
                                       "blocks.1.ffn.weight": ("BF16", (5120, 13824)),
                                       "head.weight": ("F32", (7,))})
    write_sparse_safetensors(tmp_path / "vae" / "b.safetensors", {"conv.weight": ("F32", (3, 3))})
    weights = folder_weights(tmp_path)
    assert weights.components["transformer"].bytes == nbytes == (4096 * 5120 + 2 * 5120 * 13824) * 2 + 28
    assert weights.components["transformer"].parameters == 4096 * 5120 + 2 * 5120 * 13824 + 7
    assert weights.components["transformer"].largest_block_bytes == (4096 * 5120 + 5120 * 13824) * 2
    assert weights.components["vae"].bytes == 36 and weights.total_bytes == nbytes + 36
    assert sum(p.stat().st_blocks for p in tmp_path.rglob("*.safetensors")) < 64  # sparse: nothing was written


def test_block_name_groups_by_first_layer_index():
    assert block_name("model.layers.12.mlp.up.weight") == "model.layers.12"
    assert block_name("blocks.3.attn.q.weight") == "blocks.3"
    assert block_name("lm_head.weight") == "lm_head.weight"


def test_corrupt_header_is_named(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(WeightsError, match="model.safetensors"):
        folder_weights(tmp_path)


def test_model_major_phases_load_each_slot_once_per_run_of_ready_steps():
    phases = model_major_phases(step_graph())
    slots = [slot for slot, _ in phases]
    assert slots == [None, "vlm", "editor", "scorer", "vlm", "editor", "scorer", "vlm", "i2v", "vlm", "sam3",
                     "control", "scorer"]
    assert phases[1] == ("vlm", ["camera_verdict", "scene_instruction"])  # one VLM residency for both
    order = [name for _, names in phases for name in names]
    position = {name: i for i, name in enumerate(order)}
    for step in step_graph():  # every step runs after what it reads
        assert all(position[a] < position[step.name] for a in step.after), step.name


def test_phases_reject_a_cycle():
    with pytest.raises(ValueError, match="cycle"):
        model_major_phases([StepSpec(1, "a", "vlm", ("b",)), StepSpec(1, "b", "vlm", ("a",))])


def test_plan_on_real_size_folders_fits_an_h100(real_models):
    root, sizes = real_models
    plan = make_plan(root, gpu="H100")
    for slot, nbytes in sizes.items():
        assert plan.slots[slot].weight_bytes == nbytes
    assert plan.fits, plan.problems
    assert plan.gpu_memory_bytes == 80 * GIB and plan.peak_bytes <= 80 * GIB
    assert plan.slots["vlm"].mode == "resident" and plan.slots["vlm"].batch_size > 1
    # Fun-Control with CFG at 720p cannot hold both experts, the text encoder and its activations: one expert at a time.
    assert plan.slots["control"].mode == "sequential_experts"
    assert plan.slots["control"].resident_bytes < sizes["control"]
    cost = plan.gpu_hours_per_1000_kept()
    render = next(s for s in plan.steps if s.name == "render")
    animate = next(s for s in plan.steps if s.name == "animate_background")
    assert render.gpu_seconds_per_sample > 10 * animate.gpu_seconds_per_sample  # 50 steps x CFG against 4 steps
    assert cost["total"] > cost["compute"] > 0


def test_plan_distilled_stage5_is_cheaper(real_models):
    root, _ = real_models
    stock = make_plan(root, gpu="H100").gpu_hours_per_1000_kept()["total"]
    distilled = make_plan(root, gpu="H100", steps_override={"render": 4, "render.cfg": False})
    assert distilled.gpu_hours_per_1000_kept()["total"] < stock / 3


def test_plan_cli_json(real_models, capsys):
    root, sizes = real_models
    assert main(["plan", "--models", str(root), "--gpu", "H200", "--json"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert value["fits"] is True and value["gpu_memory_bytes"] == 140 * GIB
    assert value["peak_bytes"] <= value["gpu_memory_bytes"]
    assert {k: v["weight_bytes"] for k, v in value["slots"].items()} == sizes
    assert [s["name"] for s in value["steps"]][:3] == ["camera_filter", "camera_verdict", "scene_instruction"]
    assert all({"stage", "name", "slot"} <= set(s) for s in value["steps"])


def test_plan_cli_fails_naming_the_slot_that_cannot_fit(real_models, capsys):
    root, _ = real_models
    assert main(["plan", "--models", str(root), "--gpu-memory", "4"]) == 1
    err = capsys.readouterr().err
    assert "[control]" in err and "do not fit" in err and "4.0 GiB" in err
    assert "[sam3]" not in err  # SAM3 (3.4 GB in F32) fits 4 GiB block by block


def test_plan_cli_unknown_gpu(real_models, capsys):
    root, _ = real_models
    assert main(["plan", "--models", str(root), "--gpu", "TPU"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


def test_the_runner_takes_slot_bytes_and_wan_placement_from_the_plan(real_models, monkeypatch):
    """A run on real-size folders: the runner's budget and slot bytes are the plan's, and the Wan slots load as the
    plan holds them ("auto"), or as [memory] wan_placement says."""
    from sparkle_fast.driver import runner
    from sparkle_fast.stages import slot_loaders

    root, _ = real_models
    config = load_config(overrides={"memory.gpu_memory_gib": 80})
    slots = ["vlm", "editor", "scorer", "sam3", "i2v", "control"]
    budget, planned, modes, caps = runner.memory_plan(config, root, slots)
    plan = make_plan(root, gpu_memory_gib=80)
    assert budget == plan.usable_bytes
    for slot in slots:
        p = plan.slots[slot]
        assert planned[slot] == p.resident_bytes + p.working_bytes_per_item * max(p.batch_size, 1) <= budget
        assert modes[slot] == p.mode
        assert caps[slot] == max(p.batch_size, 1)
    assert modes["control"] == "sequential_experts"
    seen = []
    monkeypatch.setattr(slot_loaders, "load_slot", lambda slot, source, placement, tiling: seen.append(
        (slot, placement, tiling)))
    runner.load_slot_model("i2v", root, config, modes)
    runner.load_slot_model("vlm", root, config, modes)
    runner.load_slot_model("control", root, load_config(overrides={"memory.wan_placement": "model_offload",
                                                                   "memory.vae_tiling": True}), modes)
    runner.load_slot_model("control", root, config, modes)
    assert seen == [("i2v", runner.PLAN_PLACEMENT[modes["i2v"]], False), ("vlm", "resident", False),
                    ("control", "model_offload", True), ("control", "sequential_experts", False)]


def test_the_plans_batch_caps_the_slots_batch_size(real_models):
    """The plan sized each slot's working memory for its own batch: a [batch] size above it is lowered to it (the
    runner's samples per call and the adapter's rows per generate call), one below it is kept."""
    from types import SimpleNamespace

    from sparkle_fast.driver import runner
    from sparkle_fast.stages.stage2 import EditStage

    root, _ = real_models
    slots = ["vlm", "editor", "scorer", "sam3", "i2v", "control"]
    config = load_config(overrides={"memory.gpu_memory_gib": 80, "batch.vlm": 64, "batch.scorer": 1})
    caps = runner.memory_plan(config, root, slots).batch_caps
    assert set(caps) == set(slots) and 1 < caps["vlm"] < 64 and caps["scorer"] > 1
    local = runner.LocalRunner(chunk_size=8, max_attempts=1)
    local.batch_caps = caps
    steps = {s.slot: s for s in runner.stage_steps(EditStage())}
    assert local._batch_size(steps["vlm"], config) == caps["vlm"]  # 64 asked, the plan's fits
    assert local._batch_size(steps["scorer"], config) == 1  # 1 asked: kept
    assert local._batch_size(steps["editor"], config) == min(config.batch.editor, caps["editor"])
    adapter = SimpleNamespace()
    runner.configure_adapter(adapter, config, "vlm", caps["vlm"])
    assert adapter.batch_size == caps["vlm"]
    runner.configure_adapter(adapter, config, "vlm")  # no plan (the tiny models): the config's size
    assert adapter.batch_size == 64
