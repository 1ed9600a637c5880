#!/usr/bin/env python3
"""Expected outputs of rmt's image preprocessing, computed independently with PIL and NumPy.

Run once (needs `pip install pillow numpy`, no torch or torchvision) from the repository root:

    python3 tests/data/gen/make_preprocess_fixtures.py

It writes tests/data/preprocess_*.npy (and two small images); tests/test_preprocess.cpp reads
them without Python. The synthetic test images are defined by `pattern()` below, and
tests/test_preprocess.cpp builds the same pixels with the same integer formula.

The transform is torchvision's, as the authors' evaluation runs it on PIL images:
    Resize(floor(size / 0.9), interpolation=BICUBIC)   # PIL Image.resize, 8-bit, antialiased
    CenterCrop(size)                                   # top = int(round((h - size) / 2.0))
    ToTensor()                                         # float32(x) / 255
    Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)  # in float32
written out here with PIL and NumPy so that torchvision is not needed.

PIL's resize order of passes changed in Pillow 13 (vertical first when the height shrinks by more
than twice as many pixels as the width); the *_hfirst fixtures are Pillow <= 12's result (always
horizontal first), obtained as two one-axis PIL resizes, which every Pillow version computes alike.
"""
import math
import os

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def pattern(w, h):
    """Gradients, a wrapping hash (sharp jumps) and a checkerboard: uint8 (h, w, 3)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255 // max(w - 1, 1) + (x * x * 7 + y * 13) % 61) & 255
    g = ((y * 255 // max(h - 1, 1)) ^ ((x * 5 + y * y * 3) % 97)) & 255
    b = np.where((x // 4 + y // 3) % 2 == 1, 255, 0)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def resize_shorter(img, size):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BICUBIC)


def resize_hfirst(img, size_wh):
    """Pillow <= 12: horizontal pass, then vertical pass."""
    w, h = size_wh
    if w != img.size[0]:
        img = img.resize((w, img.size[1]), Image.BICUBIC)
    if h != img.size[1]:
        img = img.resize((w, h), Image.BICUBIC)
    return img


def center_crop(img, size):
    w, h = img.size
    assert w >= size and h >= size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def normalize(img):
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32)


def save(name, array):
    np.save(os.path.join(OUT, name), array)
    print(f"{name}: {array.dtype} {array.shape}")


def main():
    img_40x30 = Image.fromarray(pattern(40, 30))
    img_300x200 = Image.fromarray(pattern(300, 200))
    img_30x90 = Image.fromarray(pattern(30, 90))

    # The default transform (224, resize 248): 40x30 is enlarged to 330x248. The crop as uint8.
    crop = center_crop(resize_shorter(img_40x30, math.floor(224 / 0.9)), 224)
    save("preprocess_40x30_s224.u8.npy", np.asarray(crop, dtype=np.uint8))
    # Small input sizes: the whole float tensor.
    for img, size, name in [(img_40x30, 16, "40x30_s16"), (img_300x200, 64, "300x200_s64"),
                            (img_30x90, 16, "30x90_s16")]:
        resized = resize_shorter(img, math.floor(size / 0.9))
        save(f"preprocess_{name}.npy", normalize(center_crop(resized, size)))
    # A tall image that Pillow 13 resizes vertically first: Pillow <= 12's result too.
    size = 16
    target = (math.floor(size / 0.9), int(math.floor(size / 0.9) * 90 / 30))
    save("preprocess_30x90_s16_hfirst.npy", normalize(center_crop(resize_hfirst(img_30x90, target), size)))
    # Direct resizes: shrinking both sides; enlarging the width while shrinking the height.
    save("preprocess_300x200_to_97x61.u8.npy", np.asarray(img_300x200.resize((97, 61), Image.BICUBIC)))
    save("preprocess_40x30_to_57x13.u8.npy", np.asarray(img_40x30.resize((57, 13), Image.BICUBIC)))
    save("preprocess_40x30_to_57x13_hfirst.u8.npy", np.asarray(resize_hfirst(img_40x30, (57, 13))))
    save("preprocess_40x30_to_23x41.u8.npy", np.asarray(img_40x30.resize((23, 41), Image.BICUBIC)))

    # Formats the test cannot write itself: a two-frame GIF, a palette PNG, and a JPEG (whose
    # decoding differs slightly between libjpeg-turbo and stb_image), with PIL's RGB pixels.
    small = pattern(24, 16)
    frame0 = Image.fromarray(small).quantize(colors=32, method=Image.Quantize.MEDIANCUT)
    frame1 = Image.fromarray(255 - small).quantize(colors=32, method=Image.Quantize.MEDIANCUT)
    gif = os.path.join(OUT, "preprocess_anim.gif")
    frame0.save(gif, save_all=True, append_images=[frame1], duration=100, loop=0)
    with Image.open(gif) as im:
        save("preprocess_anim.gif.rgb.npy", np.asarray(im.convert("RGB")))
    png = os.path.join(OUT, "preprocess_palette.png")
    frame0.save(png)
    with Image.open(png) as im:
        assert im.mode == "P"
        save("preprocess_palette.png.rgb.npy", np.asarray(im.convert("RGB")))
    jpg = os.path.join(OUT, "preprocess_photo.jpg")
    Image.fromarray(pattern(48, 32)).save(jpg, quality=90)
    with Image.open(jpg) as im:
        save("preprocess_photo.jpg.rgb.npy", np.asarray(im.convert("RGB")))


if __name__ == "__main__":
    main()
