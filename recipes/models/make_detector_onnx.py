"""Write models/detector.onnx (+ detector.onnx.data): a small convolutional detector exported to
ONNX with its weights as external data, as a vendor would ship it. The file is made, never
committed: `python recipes/models/make_detector_onnx.py`, then
`trtbuild run recipes/detector_onnx.toml`.

Seeded (torch.manual_seed(0)): the same file on every machine with the same torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class Detector(nn.Module):
    """A backbone of conv-BN-ReLU blocks and two heads: class scores and boxes per cell."""

    def __init__(self, width: int = 64, classes: int = 20) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out, stride in ((width, 2), (width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2)):
            layers += [nn.Conv2d(channels, out, 3, stride, 1), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.backbone = nn.Sequential(*layers)
        self.scores = nn.Conv2d(channels, classes, 1)
        self.boxes = nn.Conv2d(channels, 4, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(image)
        return self.scores(features).softmax(1), self.boxes(features).sigmoid()


def write(path: Path, width: int = 64) -> Path:
    """Export the detector to `path` (ONNX, opset 17, dynamic batch and image size) with every
    tensor over 1 KiB in `<path>.data`; returns `path`."""
    import onnx

    torch.manual_seed(0)
    model = Detector(width).eval()
    for module in model.modules():  # BN statistics as a trained model has them
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        str(path),
        input_names=["image"],
        output_names=["scores", "boxes"],
        dynamic_axes={"image": dynamic, "scores": {0: "batch"}, "boxes": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save(proto, str(path), save_as_external_data=True, location=data.name, size_threshold=1024)
    data.chmod(0o644)  # onnx writes it 0600: readable by the build's other users too
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("detector.onnx")
    print(write(out))
