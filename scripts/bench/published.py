"""The published PairLIE code's column: its training loop written plainly, whole-image inference."""

from __future__ import annotations

import numpy as np
import torch

from bench.column import GAMMA, PATCH, PUBLISHED, Column, column, official_net
from pairlie.model.nets import PairLIENet


def published_loss(net, im1: torch.Tensor, im2: torch.Tensor) -> torch.Tensor:
    from pairlie.model.losses import consistency_loss, fidelity_loss, retinex_loss

    L1, R1, X1 = net(im1)
    L2, R2, X2 = net(im2)  # the published loop computes L2 although no loss uses it
    return consistency_loss(R1, R2) + retinex_loss(L1, R1, im1, X1) + 500 * fidelity_loss(im1, X1)


@column(PUBLISHED)
class Published(Column):
    """The published code: its training loop written plainly (images decoded from disk every step), whole-image inference."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.infer_net = official_net().to(self.device)
        self.paths = None

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        if self.paths is None:
            self.paths = [scene.paths for scene in self.scenes()]
            torch.manual_seed(0)
            self.net = PairLIENet(64).to(self.device)
            self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        paths = self.paths[self.rng.integers(len(self.paths))]
        first, second = self.rng.choice(len(paths), 2, replace=False)
        ims = [
            torch.from_numpy(np.array(Image.open(paths[i]).convert("RGB"))).permute(2, 0, 1).float() / 255
            for i in (first, second)
        ]
        top = self.rng.integers(0, ims[0].shape[1] - PATCH + 1)
        left = self.rng.integers(0, ims[0].shape[2] - PATCH + 1)
        return tuple(im[:, top : top + PATCH, left : left + PATCH] for im in ims)

    def step(self, batch) -> None:
        loss = published_loss(self.net, *batch)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def same_loss(self) -> float:
        """The loss of fixed weights on fixed inputs: every training column must agree."""
        net, im1, im2 = fixed_inputs(self.device)
        with torch.no_grad():
            return published_loss(net, im1, im2).item()

    def enhance(self, image: torch.Tensor) -> torch.Tensor:
        from pairlie.model.nets import enhance

        with torch.no_grad():
            L, R, _ = self.infer_net(image[None].to(self.device))
            return enhance(L, R, GAMMA)[0].cpu()


def fixed_inputs(device: torch.device) -> tuple[PairLIENet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    net = PairLIENet(64).to(device)
    im1, im2 = torch.rand(2, 1, 3, PATCH, PATCH, device=device)
    return net, im1, im2
