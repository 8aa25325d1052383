#!/usr/bin/python3
"""Export a chexd safetensors model to ONNX (for the ONNX Runtime comparison
in tools/bench_model.sh).

    tools/export_onnx.py MODEL.safetensors OUT.onnx

Builds torchvision's densenet121 in eval mode from the file (the same loader
the reference tests use), appends the sigmoid, and exports with a dynamic
batch axis: input "input" (N, C, S, S) float32, output "probs" (N, labels).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "reference"))
import chexref  # noqa: E402


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, meta = chexref.torch_model(argv[1])
    c, s = int(meta.get("input_channels", 3)), int(meta.get("input_size", 224))
    net = torch.nn.Sequential(model, torch.nn.Sigmoid()).eval()
    x = torch.zeros(1, c, s, s)
    torch.onnx.export(net, x, argv[2], input_names=["input"], output_names=["probs"],
                      dynamic_axes={"input": {0: "n"}, "probs": {0: "n"}}, opset_version=13,
                      do_constant_folding=True)
    print(f"export_onnx: wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
