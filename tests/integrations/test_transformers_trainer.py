"""Hugging Face ``transformers.Trainer`` with valley's ALTO: a tiny GPT-2 built from a config, resume == uninterrupted.

The model (2 layers, 32-dim embeddings, dropout off) and the data (this repository's own text, as bytes) are
local; ``HF_HUB_OFFLINE=1`` makes any attempt to download fail. The Trainer gets ``optimizers=(ALTO(...),
OneCycleLR(...))``; it checkpoints the optimizer's and the scheduler's state dicts every 4 steps, and a new
Trainer resuming from step 4 must end with the parameters of the run that never stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backends.torch import ALTO, lamb_param_groups  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STEPS, SAVE_EVERY, BLOCK, BATCH = 8, 4, 16, 4


class ByteBlocks(torch.utils.data.Dataset):
    """Consecutive 16-byte blocks of the README: ``input_ids`` and ``labels`` for causal LM training."""

    def __init__(self) -> None:
        data = torch.tensor(list((ROOT / "README.md").read_bytes()), dtype=torch.long) % 128
        self.blocks = data[: (len(data) // BLOCK) * BLOCK].view(-1, BLOCK)[: STEPS * BATCH]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.blocks[index], "labels": self.blocks[index]}


def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=128,
        n_positions=BLOCK,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config)


def train(output_dir: Path, resume_from: str | None = None):
    model = tiny_gpt2()
    optimizer = ALTO(lamb_param_groups(model, weight_decay=1e-2), lr=3e-3, alpha=-1.0, e_beta=0.9, betas=(0.9, 0.99))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=STEPS)
    arguments = transformers.TrainingArguments(
        output_dir=str(output_dir),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        save_strategy="steps",
        save_steps=SAVE_EVERY,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
    )
    trainer = transformers.Trainer(
        model=model, args=arguments, train_dataset=ByteBlocks(), optimizers=(optimizer, scheduler)
    )
    trainer.train(resume_from_checkpoint=resume_from)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {name: p.detach().clone() for name, p in model.named_parameters()}, losses, optimizer


def test_trainer_resume_equals_uninterrupted(tmp_path):
    uninterrupted, losses, optimizer = train(tmp_path / "uninterrupted")
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
    assert optimizer.state  # the Trainer stepped valley's optimizer

    checkpoint = tmp_path / "uninterrupted" / f"checkpoint-{SAVE_EVERY}"
    assert (checkpoint / "optimizer.pt").exists() and (checkpoint / "scheduler.pt").exists()
    resumed, resumed_losses, _ = train(tmp_path / "resumed", resume_from=str(checkpoint))
    # The resumed Trainer restores the log of the first steps, then logs the steps it takes itself.
    assert resumed_losses[-(STEPS - SAVE_EVERY) :] == losses[SAVE_EVERY:]
    for name, value in uninterrupted.items():
        assert torch.equal(resumed[name], value), name
