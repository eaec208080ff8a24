#!/bin/sh
# The releases the image carries: the bundled docs' index with two prompt
# templates. They differ in nothing a deployment is keyed by, so serving both
# shares every deployment (kuberay/overlays/dev-cpu-releases canaries one
# against the other). Run by kuberay/Dockerfile, and by the tests with their
# own index and model:
#   RAGSERVE_REGISTRY=DIR INDEX=DIR CONFIG=kuberay/releases/cpu.yaml \
#     sh kuberay/releases/create.sh [--generator MODEL_DIR]
set -eu
: "${RAGSERVE_REGISTRY:?the registry folder}" "${INDEX:?the index folder}"
: "${CONFIG:?kuberay/releases/<variant>.yaml}"
RAGSERVE="${RAGSERVE:-ragserve}"
$RAGSERVE release create docs-v1 --index "$INDEX" --config "$CONFIG" \
  --prompt-template rag-v1 "$@"
$RAGSERVE release create docs-concise-v1 --parent docs-v1 --index "$INDEX" \
  --config "$CONFIG" --prompt-template rag-concise-v1 "$@"
