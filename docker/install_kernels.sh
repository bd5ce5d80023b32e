#!/usr/bin/env bash
# Installs mamba-ssm and causal-conv1d into the image, the way their READMEs recommend:
# `pip install --no-build-isolation`, which takes the project's prebuilt wheel from its GitHub release when
# one matches this torch, CUDA, Python and C++ ABI. With KERNELS=source (or when no wheel matches and you
# want a build for your GPU only), the sdists are built here for CUDA_ARCHS alone ("90" for Hopper, "80;90"
# for Ampere and Hopper): their setup.py compiles for every architecture from sm_53 up otherwise, an hour
# and more; one architecture takes about 7 minutes on 16 cores.
# Usage: install_kernels.sh KERNELS(prebuilt|source) CUDA_ARCHS MAMBA_SSM_VERSION CAUSAL_CONV1D_VERSION
set -euo pipefail
kernels=$1 archs=$2 mamba_version=$3 conv_version=$4
# what --no-build-isolation expects to find (torch comes with the base image)
pip install --no-cache-dir "packaging>=24" "ninja>=1.11" "wheel>=0.43" "einops>=0.8"
if [ "$kernels" = prebuilt ]; then
  pip install --no-cache-dir --no-build-isolation "causal-conv1d==$conv_version" "mamba-ssm==$mamba_version"
  exit 0
fi
work=$(mktemp -d) && cd "$work"
pip download --no-deps --no-binary :all: "causal-conv1d==$conv_version" "mamba-ssm==$mamba_version"
for sdist in *.tar.gz; do tar xzf "$sdist"; done
gencode=""
for arch in ${archs//;/ }; do gencode+="\"-gencode\", \"arch=compute_${arch},code=sm_${arch}\", "; done
for setup in causal_conv1d-*/setup.py mamba_ssm-*/setup.py; do
  # keep the -gencode flags of the architectures asked for, drop the rest (and the verbose ptxas output)
  python3 - "$setup" "$gencode" <<'PY'
import sys
path, gencode = sys.argv[1], sys.argv[2]
text = open(path).read()
marker = "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI"
assert marker in text, f"{path}: the build flags moved; update docker/install_kernels.sh"
keep = f'    cc_flag = [f for f in cc_flag if f != "-gencode" and not f.startswith("arch=")] + [{gencode}]\n'
text = text.replace(marker, keep + marker, 1).replace('"--ptxas-options=-v",', "").replace('"-lineinfo",', "")
open(path, "w").write(text)
PY
done
export MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=${MAX_JOBS:-8} NVCC_THREADS=${NVCC_THREADS:-2}
for dir in causal_conv1d-* mamba_ssm-*; do
  (cd "$dir" && pip wheel --no-build-isolation --no-deps -w "$work/wheels" .)
done
pip install --no-cache-dir --no-deps "$work"/wheels/*.whl
cd / && rm -rf "$work"
