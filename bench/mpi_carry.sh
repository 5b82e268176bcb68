#!/usr/bin/env bash
# Packs this machine's Open MPI (Debian 12: openmpi-bin 4.1.4, libpmix2) and every library ft needs
# (besides glibc and libstdc++) into one archive, for running `mpirun ... ft` on a host that has neither
# (the accelerator host of bench/RESULTS.md: no Open MPI, no apt). On that host:
#   mkdir -p /tmp/o && tar -C /tmp/o -xJf build-carry/ompi.tar.xz && source /tmp/o/build-dist-mpi/env.sh
# then `mpirun` and `ft` on PATH are wrappers that set LD_LIBRARY_PATH for themselves alone (OPAL_PREFIX
# relocates Open MPI's plugins and help files; PMIx gets its plugin path; shared memory only, as root).
# usage: [TOK=gpt2-tokenizer-dir] bash bench/mpi_carry.sh [FT_BINARY]    (writes build-dist-mpi/ and build-carry/ompi.tar.xz)
set -euo pipefail
FT=${1:-build/ft}
D=build-dist-mpi P=/usr/lib/x86_64-linux-gnu
rm -rf $D && mkdir -p $D/usr/bin $D/bin $D/lib $D/tok $D/wrap $D/usr/share
cp -a /usr/bin/orterun /usr/bin/orted $D/usr/bin/ && ln -s orterun $D/usr/bin/mpirun
mkdir -p $D$P/openmpi/lib $D$P/pmix2/lib
cp -a $P/openmpi/lib/openmpi3 $D$P/openmpi/lib/ && cp -a $P/pmix2/lib/pmix $D$P/pmix2/lib/ && cp -a $P/pmix2/share $D$P/pmix2/
cp -a /usr/share/openmpi $D/usr/share/
cp "$FT" $D/bin/ft
tok=${TOK:-$(dirname "$0")/../../shared/data/tokenizers/gpt2}  # bench/make_bench_model.py's default tokenizer
cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" $D/tok/
ldd $D/bin/ft /usr/bin/orterun /usr/bin/orted $(find $D/usr/lib -name '*.so*') $P/pmix2/lib/libpmix.so.2 2>/dev/null | awk '/=> \//{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64|libutil|libresolv)\.so' | xargs -I{} cp -L {} $D/lib/
cp -L $P/pmix2/lib/libpmix.so.2 $D/lib/
cat > $D/env.sh <<'ENV'
# Self-contained Open MPI 4.1.4 (Debian 12) + ft's libraries: source this.
D=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export FTD=$D OPAL_PREFIX=$D/usr PATH=$D/wrap:$PATH
export PMIX_MCA_mca_base_component_path=$D/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix PMIX_MCA_pcompress_base_silence_warning=1
export OMPI_MCA_btl=self,vader OMPI_MCA_plm_rsh_agent=false OMPI_MCA_mca_base_component_show_load_errors=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ENV
printf '#!/bin/sh\nLD_LIBRARY_PATH=$FTD/lib exec $FTD/usr/bin/orterun "$@"\n' > $D/wrap/mpirun
printf '#!/bin/sh\nLD_LIBRARY_PATH=$FTD/lib exec $FTD/bin/ft "$@"\n' > $D/wrap/ft
chmod +x $D/wrap/*
mkdir -p build-carry && tar -cJf build-carry/ompi.tar.xz $D
ls -l build-carry/ompi.tar.xz
