"""A Lightning module and data module on scikit-learn's digits, used by the Lightning tests and LightningCLI."""

from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_digits

from backends.torch import ALTO, lamb_param_groups

BATCH = 128  # 1797 digits -> 1792 used -> 14 batches an epoch


class DigitsData(L.LightningDataModule):
    """The first 1792 digits, scaled to [0, 1], in a fixed order (no shuffling: resume needs the same batches)."""

    def __init__(self, batch_size: int = BATCH) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str | None = None) -> None:
        x, y = load_digits(return_X_y=True)
        n = (len(x) // self.batch_size) * self.batch_size
        self.dataset = torch.utils.data.TensorDataset(
            torch.tensor(x[:n] / 16.0, dtype=torch.float32), torch.tensor(y[:n], dtype=torch.long)
        )

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False)


class DigitsMLP(L.LightningModule):
    """64-64-10 MLP. ``configure_optimizers``: ALTO with OneCycleLR stepped every batch, unless the CLI adds one."""

    def __init__(self, lr: float = 1e-2, total_steps: int = 28) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
        self.losses: list = []

    def training_step(self, batch, batch_index):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        optimizer = ALTO(
            lamb_param_groups(self.net, weight_decay=1e-4),
            lr=self.hparams.lr,
            alpha=-1.0,
            e_beta=0.9,
            betas=(0.9, 0.99),
        )
        # OneCycleLR cycles betas[0], the first-moment coefficient (E's coefficient is e_beta, never cycled).
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.total_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DigitsMLPForCLI(DigitsMLP):
    """The same model without ``configure_optimizers``: LightningCLI builds the optimizer from ``--optimizer``."""

    configure_optimizers = L.LightningModule.configure_optimizers
