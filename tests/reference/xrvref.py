"""tests/reference/xrvref.py - torchxrayvision's inference pipeline, written from
its source (mlmed/torchxrayvision; the package itself cannot be installed here),
on Debian's python3-skimage 0.19 and torch.

Followed, function by function:
  torchxrayvision/datasets.py (utils.py in 1.3+)  normalize(img, maxval)
        -> (2 * (img.astype(np.float32) / maxval) - 1.) * 1024
  README "Prepare the image": skimage.io.imread, normalize(img, 255),
        img.mean(2)[None, ...] for a colour image (a gray one: img[None, ...])
  torchxrayvision/datasets.py XRayCenterCrop.crop_center
        -> start = side // 2 - min(y, x) // 2 on each axis
  torchxrayvision/datasets.py XRayResizer(size).__call__ (engine "skimage")
        -> skimage.transform.resize(img, (1, size, size), mode='constant',
           preserve_range=True).astype(np.float32)
  torchxrayvision/models.py DenseNet.forward
        -> features -> relu -> adaptive_avg_pool2d -> classifier; with
           op_threshs: torch.sigmoid, then op_norm(out, op_threshs)
  torchxrayvision/models.py op_norm (copied arithmetic, float32 tensors).
"""
import warnings

import numpy as np
import skimage.io
import skimage.transform
import torch


def normalize(img, maxval):
    """torchxrayvision normalize: [0, maxval] -> [-1024, 1024] in float32."""
    if img.max() > maxval:
        raise ValueError(f"max image value ({img.max()}) higher than expected bound ({maxval})")
    return (2 * (img.astype(np.float32) / maxval) - 1.0) * 1024


def load(path, maxval):
    """README: imread, normalize, channel mean for colour -> (1, H, W) float32."""
    img = skimage.io.imread(path)
    img = normalize(img, maxval)
    if img.ndim == 3:
        img = img.mean(2)
    return img[None, ...]


def center_crop(img):
    """XRayCenterCrop.crop_center."""
    _, y, x = img.shape
    crop_size = np.min([y, x])
    startx = x // 2 - (crop_size // 2)
    starty = y // 2 - (crop_size // 2)
    return img[:, starty:starty + crop_size, startx:startx + crop_size]


def resize(img, size):
    """XRayResizer(size), skimage engine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return skimage.transform.resize(img, (1, size, size), mode="constant",
                                        preserve_range=True).astype(np.float32)


def tensor(path, maxval, size=224):
    """The (1, size, size) model input torchxrayvision makes from a file."""
    return resize(center_crop(load(path, maxval)), size)


def op_norm(outputs, op_threshs):
    """torchxrayvision/models.py op_norm, as written there."""
    op_threshs = op_threshs.expand(outputs.shape[0], -1)
    outputs_new = torch.zeros(outputs.shape, device=outputs.device) + 0.5
    mask_leq = (outputs < op_threshs) & ~torch.isnan(op_threshs)
    mask_gt = ~(outputs < op_threshs) & ~torch.isnan(op_threshs)
    outputs_new[mask_leq] = outputs[mask_leq] / (op_threshs[mask_leq] * 2)
    outputs_new[mask_gt] = 1.0 - ((1.0 - outputs[mask_gt]) / ((1 - op_threshs[mask_gt]) * 2))
    return outputs_new


class XrvDenseNet(torch.nn.Module):
    """DenseNet.forward of torchxrayvision on a torchvision densenet121 carrying
    the same weights (its features/classifier modules are torchvision's)."""

    def __init__(self, densenet, op_threshs):
        super().__init__()
        self.features = densenet.features
        self.classifier = densenet.classifier
        self.op_threshs = op_threshs

    def forward(self, x):
        features = self.features(x)
        out = torch.nn.functional.relu(features, inplace=False)
        out = torch.nn.functional.adaptive_avg_pool2d(out, (1, 1)).view(features.size(0), -1)
        out = self.classifier(out)
        if self.op_threshs is not None:
            out = torch.sigmoid(out)
            out = op_norm(out, self.op_threshs)
        return out
