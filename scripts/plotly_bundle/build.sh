#!/bin/sh
# Builds explorer/assets/plotly-explorer-<version>.min.js: plotly.js's core with only the trace
# types the explorer draws (heatmap, bar, scatter; entry.js), minified with esbuild (docs/explorer.md,
# "A smaller plotly"), and explorer/assets/regenerator-runtime-<version>.min.js, the generator runtime
# that stands in for Dash's polyfill (explorer/app.py, POLYFILL_SCRIPT).
# Needs node and npm; run from anywhere:  sh scripts/plotly_bundle/build.sh
set -eu
VERSION=4.1.1  # the plotly.js of the `plotly` Python package's own bundle
REGENERATOR=0.14.1
HERE=$(cd "$(dirname "$0")" && pwd)
OUT="$HERE/../../explorer/assets/plotly-explorer-$VERSION.min.js"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$HERE/entry.js" "$WORK/"
cd "$WORK"
npm init -y >/dev/null
npm install --ignore-scripts --no-audit --no-fund "plotly.js@$VERSION" "regenerator-runtime@$REGENERATOR" esbuild@0.28 >/dev/null
# css: the map traces' stylesheet, which core pulls in and these traces never use
npx esbuild entry.js --bundle --minify --format=iife --global-name=Plotly --target=es2016 \
  --define:global=window --define:define.amd=false --loader:.css=empty --legal-comments=none \
  --log-level=error --outfile="$OUT" --banner:js="/**
* plotly.js (attnstore explorer bundle: core + heatmap, bar, scatter - minified) v$VERSION
* Copyright 2012-2026, Plotly, Inc.
* All rights reserved.
* Licensed under the MIT license
* Built by scripts/plotly_bundle/build.sh (esbuild) from the npm package plotly.js@$VERSION
*/"
echo "wrote $OUT"
RUNTIME="$HERE/../../explorer/assets/regenerator-runtime-$REGENERATOR.min.js"
npx esbuild node_modules/regenerator-runtime/runtime.js --minify --legal-comments=none --log-level=error \
  --outfile="$RUNTIME" --banner:js="/* regenerator-runtime v$REGENERATOR (minified) - Copyright (c) 2014-present, \
Facebook, Inc. - MIT license. Built by scripts/plotly_bundle/build.sh (esbuild) from the npm package \
regenerator-runtime@$REGENERATOR */"
echo "wrote $RUNTIME"
