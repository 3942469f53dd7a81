"""Few-step recipe: a distillation run killed and resumed is bit-identical; the fixed-list DDIM
sampler on the teacher's own grid matches the teacher-solver used for distillation targets.

Run: python -m pytest models/train/test_fewstep.py
"""
import numpy as np
import pytest
import torch

import fewstep as F
import nets


def _tiny_teacher():
    torch.manual_seed(0)
    m = nets.build("dualscale")
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _killed_after_checkpoint(monkeypatch, run, step=20):
    """Calls run() with checkpoint saving that raises KeyboardInterrupt (a kill) right after the
    checkpoint of `step` is written, then restores saving."""
    real_save = F.diffusion._atomic_torch_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if path.name == "ckpt.pt" and obj["step"] == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(F.diffusion, "_atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(F.diffusion, "_atomic_torch_save", real_save)


def _run_killed_and_resumed(tmp_path, monkeypatch, run):
    """run(name) trains into tmp_path/name: once straight through ("a"), once killed after the
    step-20 checkpoint and resumed ("b"). Asserts the resume and equal EMA weights; returns the
    two results and a's EMA weights."""
    a = run("a")
    _killed_after_checkpoint(monkeypatch, lambda: run("b"))
    assert not (tmp_path / "b" / "ema.pt").exists()
    b = run("b")
    assert b["resumed_at_steps"] == [20]
    ea, eb = torch.load(tmp_path / "a" / "ema.pt"), torch.load(tmp_path / "b" / "ema.pt")
    for k in ea:
        assert torch.equal(ea[k], eb[k]), k
    return a, b, ea


def test_pdt_killed_and_resumed_is_bit_identical(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    data = np.random.default_rng(0).normal(size=(600, 2)).astype(np.float32)
    teacher = _tiny_teacher()
    cfg = F.FewCfg(method="pdt", steps=30, ckpt_every=10, lr=1e-4, pd_student_steps=4, init="test")
    a, b, _ = _run_killed_and_resumed(tmp_path, monkeypatch, lambda d: F.train_run(
        tmp_path / d, 3, data, cfg, init_state=teacher.state_dict(), teacher=teacher))
    assert a["final_loss_last500"] == b["final_loss_last500"]


def test_teacher_solve_matches_dpmpp2m_sampler():
    torch.set_num_threads(1)
    teacher = _tiny_teacher()
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    tab = F._td_tables(1, 16, 1.5)  # one interval spanning the whole 16-point grid, then clean
    x = F.teacher_solve(teacher, z, tab[[0] * len(z)])
    den = F.Denoiser(teacher, F.TeacherDiscrete(), "epsilon")
    y = F.sample_dpmpp2m(den, z, F.teacher_grid(16, 16, 1.5))
    assert torch.allclose(x, y, atol=1e-3, rtol=1e-3)


def test_teacher_grid_is_nested_and_strict():
    g64 = F.teacher_grid(64)
    assert g64[0] == 99 and g64[-1] == 0 and all(a > b for a, b in zip(g64, g64[1:]))
    for n in (32, 16, 8, 4, 2, 1):
        assert set(F.teacher_grid(n)) <= set(F.teacher_grid(2 * n) if 2 * n <= 64 else g64)
    assert F.teacher_grid(8) == [99.0, 81.0, 64.0, 49.0, 35.0, 23.0, 15.0, 7.0]
    # the td students' grids (base 32) differ near t = 0 from the pdt ones (base 64)
    assert F.teacher_grid(8, 32, 1.5) == [99.0, 81.0, 64.0, 49.0, 35.0, 23.0, 12.0, 4.0]
    assert F.teacher_grid(4, 32, 1.5) == [99.0, 64.0, 35.0, 12.0]


def _dm_setup(teacher):
    grid = [99, 31, 0]
    targets = F.tdc_targets(teacher, "circle", 0, grid, 2, 64, data=F.fresh_data("circle", 0, -1, 1000))
    cfg = F.FewCfg(method="dm", steps=30, ckpt_every=10, lr=1e-4, batch_size=16, ema_decay=0.99, ema_every=1,
                   ema_update_after_step=5, init="test", grid=tuple(grid), sub_steps=2, cache=64, dataset="circle",
                   dm_batch=32, dm_data_batch=64, dm_bandwidths=(0.1, 1.0), reg_weight=0.5)
    return cfg, targets


def test_dm_killed_and_resumed_is_bit_identical(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    teacher = _tiny_teacher()
    cfg, targets = _dm_setup(teacher)
    a, b, ea = _run_killed_and_resumed(tmp_path, monkeypatch, lambda d: F.train_run(
        tmp_path / d, 3, None, cfg, init_state=teacher.state_dict(), targets=targets))
    assert a["final_mmd2_reg_last100"] == b["final_mmd2_reg_last100"]
    assert not torch.equal(ea["upscale.weight"], teacher.state_dict()["upscale.weight"])  # it trained


def test_dm_chain_is_the_ddim_sampler_with_gradients_and_data_is_fresh():
    torch.set_num_threads(1)
    teacher = _tiny_teacher()
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(2))
    ts = [99.0, 59.0, 15.0, 0.0]
    want = F.sample_ddim(F.Denoiser(teacher, F.TeacherDiscrete(), "epsilon"), z, ts)
    assert not want.requires_grad
    w = teacher.upscale.weight.requires_grad_(True)
    got = F.sample_ddim(F.Denoiser(teacher, F.TeacherDiscrete(), "epsilon", grad=True), z, ts)
    assert torch.equal(got.detach(), want)
    got.sum().backward()
    assert w.grad is not None and float(w.grad.abs().sum()) > 0
    ref = F.data_of("circle")
    for idx in (-1, 0, 1):
        x = F.fresh_data("circle", 0, idx, 500)
        assert x.shape == (500, 2) and not np.array_equal(x, ref[:500])
    assert not np.array_equal(F.fresh_data("circle", 0, 0, 500), F.fresh_data("circle", 0, 1, 500))
    y = torch.from_numpy(F.fresh_data("circle", 1, 0, 800))
    same = F.mmd2(torch.from_numpy(F.fresh_data("circle", 1, 1, 800)), y, (0.1, 1.0))
    off = F.mmd2(torch.from_numpy(F.fresh_data("circle", 1, 1, 800)) * 1.1, y, (0.1, 1.0))
    assert abs(float(same)) < 0.01 < float(off)
