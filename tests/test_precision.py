"""bf16 only where the hardware runs it natively: chosen from the CPU capability (faked here), forced with a warning."""

from __future__ import annotations

import logging

import pytest

from reversal_hf import precision
from reversal_hf.configs import load_recipe


@pytest.mark.parametrize(
    ("capability", "bf16"), [("AVX2", False), ("AVX512", False), ("AVX512_BF16", True), ("AMX", True)]
)
def test_unset_bf16_follows_the_cpu(capability: str, bf16: bool):
    chosen = precision.choose_precision(None, on_cpu=True, capability=capability)
    assert (chosen.bf16, chosen.cpu_capability, chosen.warning) == (bf16, capability, None)
    assert capability in chosen.reason and chosen.as_dict()["dtype"] == ("bf16" if bf16 else "fp32")


def test_forced_bf16_on_an_emulating_cpu_warns_in_one_line():
    chosen = precision.choose_precision(True, on_cpu=True, capability="AVX2")
    assert chosen.bf16 and chosen.warning and "\n" not in chosen.warning and "AVX2" in chosen.warning
    assert precision.choose_precision(True, on_cpu=True, capability="AMX").warning is None
    assert not precision.choose_precision(False, on_cpu=True, capability="AMX").bf16


@pytest.mark.parametrize(("capability", "bf16"), [("AVX2", False), ("AVX512_BF16", True)])
def test_smollm2_recipes_resolve_to_the_native_precision(monkeypatch: pytest.MonkeyPatch, capability: str, bf16: bool):
    monkeypatch.setattr(precision, "cpu_capability", lambda: capability)
    for name in ("exp1_smollm2_135m", "exp3_smollm2_135m"):
        recipe = load_recipe(name, on_launcher=True)
        assert recipe.training_args.bf16 is bf16 and recipe.precision.bf16 is bf16
        assert recipe.training_args.mixed_precision == ("bf16" if bf16 else "no")
        assert recipe.resolved_config()["bf16"] is bf16


def test_a_recipe_forcing_bf16_is_honoured_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX2")
    with caplog.at_level(logging.WARNING, logger="reversal_hf.configs"):
        recipe = load_recipe("exp1_smollm2_135m", ["--bf16", "true"], on_launcher=True)
    assert recipe.training_args.bf16 and recipe.precision.warning
    assert [r.getMessage() for r in caplog.records] == [f"exp1_smollm2_135m: {recipe.precision.warning}"]


def test_gpu_recipes_are_left_to_the_job():
    """The launcher is not the machine a GPU recipe trains on: it keeps the recipe's bf16 and chooses nothing."""
    recipe = load_recipe("exp3_llama30b", on_launcher=True)
    assert recipe.training_args.bf16 and recipe.precision is None
