#!/usr/bin/env bash
# Train a multi-speaker base voice on CPU from the synthetic multi-speaker demo corpus.
#
#   recipes/base_model_cpu.sh [WORK]            # default WORK=work/base-cpu
#   UTTERANCES=100 MINUTES=30 THREADS=2 recipes/base_model_cpu.sh work/base-cpu
#
# Stages (each skips finished work on a re-run: demo-data keeps existing wavs, prepare
# reuses processed items, train resumes from WORK/run/checkpoints/last.ckpt):
#   1. demo-data: 9 voices (6 espeak-ng + flite awb, kal16, rms) x UTTERANCES ARCTIC prompts.
#      flite slt is never in it: it is the held-out voice for fine-tuning.
#   2. prepare:   22.05 kHz, espeak-ng phonemes, 10% validation per speaker.
#   3. train:     FastSpeech 2, cpu preset, for MINUTES of wall time.
# Wall time of each stage is appended to WORK/timings.tsv.
set -euo pipefail

WORK=${1:-work/base-cpu}
UTTERANCES=${UTTERANCES:-100}
MINUTES=${MINUTES:-30}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
if [[ -n "${VOICETRAIN:-}" ]]; then
    VT=$VOICETRAIN
elif command -v voicetrain >/dev/null 2>&1; then
    VT=voicetrain
elif [[ -x .venv/bin/voicetrain ]]; then
    VT=.venv/bin/voicetrain
else
    echo "error: voicetrain not found; activate the venv (. .venv/bin/activate) or set VOICETRAIN=path" >&2
    exit 1
fi

mkdir -p "$WORK"
TIMINGS="$WORK/timings.tsv"
[[ -f "$TIMINGS" ]] || printf 'stage\tseconds\tutterances_per_voice\tminutes\tthreads\tload_avg_1m\n' > "$TIMINGS"

stage() {  # stage NAME COMMAND...: run it, record its wall time
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    printf '%s\t%.1f\t%s\t%s\t%s\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$UTTERANCES" "$MINUTES" "$THREADS" \
        "$(cut -d' ' -f1 /proc/loadavg)" >> "$TIMINGS"
}

stage demo-data "$VT" demo-data "$WORK/corpus" --voices multi --utterances "$UTTERANCES"
stage prepare "$VT" prepare "$WORK/corpus" --out "$WORK/dataset" --workers "$WORKERS"
stage train "$VT" train "$WORK/dataset" --out "$WORK/run" --max-minutes "$MINUTES" --threads "$THREADS"

echo "base voice: $WORK/run (speakers: $(ls "$WORK/corpus" | grep -v '^\.' | tr '\n' ' '))"
echo "stage timings: $TIMINGS"
cat "$TIMINGS"
