"""The contracts a researcher's parts rely on: Step's tensors, loss terms checked before a run, schedules in the run's units."""

from __future__ import annotations

import torch

from pairlie.module import PairLIEModule


def test_step_enhanced_is_illumination_to_gamma_times_reflectance():
    torch.manual_seed(0)
    module = PairLIEModule(width=4, gamma=0.3)
    images = [torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16) * 0.5]
    step = module._forward_step(images)
    assert step.gamma == 0.3
    for k in range(2):
        expected = step.illumination(k) ** 0.3 * step.reflectance(k)
        assert step.enhanced(k).shape == (2, 3, 16, 16)
        torch.testing.assert_close(step.enhanced(k), expected, rtol=0, atol=0)
    # the two exposures differ, so each k picks its own
    assert not torch.allclose(step.enhanced(0), step.enhanced(1))


def test_step_enhanced_on_a_net_of_ones_own_uses_the_runs_gamma():
    class Whole(torch.nn.Module):  # no parts(): the module's other code path
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, im):
            out = torch.sigmoid(self.conv(im))
            return out[:, :1], out[:, 1:], im

    module = PairLIEModule(net=Whole(), gamma=0.5)
    step = module._forward_step([torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)])
    out = module.net(step.images[1])
    torch.testing.assert_close(step.enhanced(1), out[0] ** 0.5 * out[1])
