"""Precision chosen by the hardware (video2reward.precision), with the hardware faked both ways."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from video2reward import ProgressModel, load_reward_model, save_reward_model
from video2reward import precision as prec
from video2reward.precision import CpuInfo, Precision, add_precision_flag, resolve_precision

AVX2 = CpuInfo(model="fake AVX2", has_avx2=True, has_avx512=False, has_avx512_bf16=False, has_amx=False,
               aten_capability="AVX2", onednn_max_isa=None)
AVX512 = replace(AVX2, model="fake AVX-512", has_avx512=True, aten_capability="AVX512")
AVX512_BF16 = replace(AVX512, model="fake AVX-512 BF16", has_avx512_bf16=True)
AMX = replace(AVX512_BF16, model="fake AMX", has_amx=True)


@pytest.fixture
def fake_cpu(monkeypatch):
    def use(info: CpuInfo) -> None:
        monkeypatch.setattr(prec, "cpu_info", lambda: info)
    return use


@pytest.mark.parametrize("info,expected", [(AVX2, "fp32"), (AVX512, "fp32"), (AVX512_BF16, "bf16"), (AMX, "bf16")])
def test_auto_follows_native_bf16(fake_cpu, info, expected):
    fake_cpu(info)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == expected and chosen.amp == (expected == "bf16")
    assert chosen.channels_last, "channels_last was measured faster on CPU in both precisions"
    assert chosen.reason.startswith("auto: ")
    assert ("no native bf16" in chosen.reason) == (expected == "fp32")


@pytest.mark.parametrize("restricted", [dict(onednn_max_isa="AVX2"), dict(aten_capability="AVX2"),
                                        dict(onednn_max_isa="avx512_core")])
def test_restricted_kernels_mean_fp32_on_a_bf16_cpu(fake_cpu, restricted):
    """ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY below bf16 leave the CPU flags unchanged but make
    bf16 emulated: auto must pick fp32 there, as on a real AVX2 machine."""
    fake_cpu(replace(AVX512_BF16, **restricted))
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == "fp32" and "emulated" in chosen.reason
    assert next(iter(restricted.values())) in chosen.reason


def test_unrestricted_onednn_isa_keeps_bf16(fake_cpu):
    fake_cpu(replace(AMX, onednn_max_isa="AVX512_CORE_AMX"))
    assert resolve_precision("auto", "cpu").name == "bf16"


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_follows_device_bf16_support(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    chosen = resolve_precision("auto", "cuda")
    assert chosen.name == ("bf16" if supported else "fp32")
    assert chosen.channels_last == supported  # NHWC pays with tensor-core dtypes, not in fp32
    assert "Fake GPU" in chosen.reason


def test_explicit_choices_and_legacy_amp_switch(fake_cpu):
    fake_cpu(AVX2)
    assert resolve_precision("fp32").name == "fp32"
    forced = resolve_precision("bf16")
    assert forced.name == "bf16" and "no native bf16" in forced.reason  # allowed, but the log says it is emulated
    assert resolve_precision(False).name == "fp32" and resolve_precision(True).name == "bf16"  # amp=false / amp=true
    assert resolve_precision(None).name == resolve_precision("auto").name == "fp32"
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32"):
        resolve_precision("fp16")
    line = resolve_precision("auto").describe()
    assert line.startswith("precision: fp32 (auto: CPU has no native bf16: AVX2)") and "\n" not in line


def test_this_machine_is_classified_from_its_cpu_flags():
    """The real detection agrees with /proc/cpuinfo, and a kernel restriction (in a fresh process:
    torch reads ATEN_CPU_CAPABILITY at start-up) always yields fp32."""
    flags = open("/proc/cpuinfo").read().split()
    native = ("avx512_bf16" in flags or "amx_bf16" in flags)
    info = prec.cpu_info()
    assert info.has_avx512_bf16 == ("avx512_bf16" in flags) and info.has_avx2 == ("avx2" in flags)
    restricted = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("ATEN_CPU_CAPABILITY")
    if not restricted:
        assert (resolve_precision("auto", "cpu").name == "bf16") == native
    code = "from video2reward.precision import resolve_precision; print(resolve_precision('auto', 'cpu').describe())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("precision: fp32 (auto: ")


def test_inference_defaults_to_exact_fp32(tmp_path, fake_cpu):
    fake_cpu(AMX)  # even where bf16 would be fast, scoring stays exact unless asked
    torch.manual_seed(0)
    model = ProgressModel("convnet", image_size=32)
    assert not model.amp
    path = save_reward_model(model, tmp_path / "m.pth")
    assert not load_reward_model(path).amp
    assert load_reward_model(path, precision="auto").amp
    assert not load_reward_model(path, precision="auto", amp=False).amp  # explicit kwargs win


def test_fp32_and_bf16_training_forward_agree():
    """The same weights under bf16 autocast give mu within 0.02 and sigma within 5 % of fp32, on
    the training path (train-mode BatchNorm) as well as inference."""
    torch.manual_seed(0)
    model = ProgressModel("convnet_spatial", image_size=84, head="distance").train()
    x = torch.randint(0, 256, (12, 3, 84, 84), dtype=torch.uint8)
    mu32, s32 = model(x[:4], x[4:8], x[8:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu16, s16 = model(x[:4], x[4:8], x[8:])
    assert mu16.dtype == torch.float32  # the head runs in fp32 whatever the autocast
    assert (mu16 - mu32).abs().max() < 0.02 and ((s16 - s32).abs() / s32).max() < 0.05


def test_precision_flag_and_no_amp_alias():
    import argparse
    single = argparse.ArgumentParser()
    add_precision_flag(single, default="fp32")
    assert single.parse_args([]).precision == "fp32"
    assert single.parse_args(["--precision", "auto"]).precision == "auto"
    assert single.parse_args(["--no_amp"]).precision == "fp32"
    compare = argparse.ArgumentParser()
    add_precision_flag(compare, default=["fp32", "bf16"], compare=True)
    assert compare.parse_args([]).precision == ["fp32", "bf16"]
    assert compare.parse_args(["--precision", "auto"]).precision == ["auto"]
    assert compare.parse_args(["--no_amp"]).precision == ["fp32"]
    assert Precision("bf16", True, "x").label == "bf16+CL" and Precision("fp32", False, "x").label == "fp32"
