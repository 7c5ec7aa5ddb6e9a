"""The teacher–student pieces on a device (default cuda; DEV=cpu W=4 to try it here): EMA teacher, its thresholded
targets, the strong view and three student steps at full width, without Ray."""

import os

import torch

from cryopick.model.unet import UNet
from cryopick.training.loss import masked_bce
from cryopick.training.teacher import ema_update, make_teacher, strong_view, teacher_targets

dev = torch.device(os.environ.get("DEV", "cuda"))
torch.manual_seed(0)
student = UNet(base_width=int(os.environ.get("W", 64))).to(dev)
teacher = make_teacher(student)
opt = torch.optim.AdamW(student.parameters(), 1e-3)
g = torch.Generator().manual_seed(0)
x = torch.randn(16, 1, 128, 128, device=dev)
m = torch.full((16, 1, 128, 128), -1, dtype=torch.int8, device=dev)
m[:8, :, 40:60, 40:60] = 1
m[:8, :, :20] = 0
for step in range(3):
    t = teacher_targets(teacher, x, m, 0.95, 0.05)
    xs, ts = strong_view(x, t, g)
    loss = masked_bce(student(xs, return_logits=True), ts)
    opt.zero_grad()
    loss.backward()
    opt.step()
    ema_update(teacher, student, 0.99)
    print(f"step {step}: loss {loss.item():.4f} on {xs.device}, targets {[(t == v).sum().item() for v in (-1, 0, 1)]}")
assert all(p.device.type == dev.type for p in teacher.parameters())
print(f"teacher pieces on {dev}: ok")
