"""Lightning: ``configure_optimizers`` with ALTO and a per-step OneCycleLR, bf16, resume == uninterrupted; LightningCLI.

Two epochs of 12 batches on scikit-learn's digits; the resumed run starts from the checkpoint written at the
end of the first epoch (``ModelCheckpoint``) and must end with the parameters of the run that never stopped.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")
pytest.importorskip("sklearn")

from tests.integrations._lightning_digits import DigitsData, DigitsMLP, DigitsMLPForCLI  # noqa: E402

EPOCHS, STEPS_PER_EPOCH = 2, 14  # 1797 digits -> 14 batches of 128


def fit(root, precision, resume_from=None):
    model = DigitsMLP(lr=0.1, total_steps=EPOCHS * STEPS_PER_EPOCH)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoints],
        deterministic=True,
    )
    trainer.fit(model, datamodule=DigitsData(), ckpt_path=resume_from)
    return model, trainer


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_configure_optimizers_resume_equals_uninterrupted(tmp_path, precision):
    model, trainer = fit(tmp_path / "uninterrupted", precision)
    assert trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    assert model.losses[-1] < 0.8 * model.losses[0], model.losses
    optimizer = trainer.optimizers[0]
    assert type(optimizer).__name__ == "ALTO" and optimizer.state

    first_epoch = sorted((tmp_path / "uninterrupted").glob("epoch=0-*.ckpt"))
    assert len(first_epoch) == 1, list((tmp_path / "uninterrupted").iterdir())
    resumed, resumed_trainer = fit(tmp_path / "resumed", precision, resume_from=str(first_epoch[0]))
    assert resumed_trainer.global_step == EPOCHS * STEPS_PER_EPOCH
    assert resumed.losses == model.losses[STEPS_PER_EPOCH:]
    for (name, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


def _cli_run(tmp_path, extra):
    from lightning.pytorch.cli import LightningCLI

    arguments = [
        "fit",
        "--trainer.max_steps=6",
        "--trainer.accelerator=cpu",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={tmp_path}",
        *extra,
    ]
    return LightningCLI(DigitsMLPForCLI, DigitsData, args=arguments, save_config_kwargs={"overwrite": True})


def test_lightning_cli_optimizer_lr(tmp_path):
    cli = _cli_run(tmp_path, ["--optimizer=backends.torch.ALTO", "--optimizer.lr=0.02", "--optimizer.alpha=-1.0"])
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer).__name__ == "ALTO"
    assert optimizer.param_groups[0]["lr"] == 0.02 and optimizer.param_groups[0]["alpha"] == -1.0
    assert cli.trainer.global_step == 6
