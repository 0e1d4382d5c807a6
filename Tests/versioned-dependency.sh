#!/usr/bin/env bash
# Checks that OnnxTrain can be a versioned SwiftPM dependency (`.package(url:, from:)`), which
# SwiftPM refuses for a package whose library targets use unsafe build flags: copies the files git
# tracks (as they are in the working tree) into a local git repository tagged 1.0.0, then builds
# and runs Tests/VersionedDependency against it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${VERSIONED_DEPENDENCY_DIR:-.build-versioned}
# SwiftPM names a package by its URL's last component: the copy is called onnx-train.
repo="$work/onnx-train"
rm -rf "$repo" "$work/consumer" "$work/consumer-build"
mkdir -p "$repo" "$work/consumer"
git ls-files -z | xargs -0 cp --parents -t "$repo"
( cd "$repo" && git init -q && git add -A && git -c user.name=check -c user.email=check@localhost commit -qm snapshot && git tag 1.0.0 && git repack -adq )
cp -R Tests/VersionedDependency/Sources "$work/consumer/"
sed "s|@REPOSITORY_URL@|file://$(cd "$repo" && pwd)|" Tests/VersionedDependency/Package.swift.in > "$work/consumer/Package.swift"
cd "$work/consumer"
swift build --scratch-path ../consumer-build 2>&1 | tail -3
../consumer-build/debug/Consumer
