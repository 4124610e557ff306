#!/usr/bin/env bash
# Fetch the dashboard's JavaScript from the npm registry at pinned versions, with licences:
# Chart.js ships in the trainer package; axe-core is for the browser tests only.
set -euo pipefail
cd "$(dirname "$0")/.."

CHARTJS_VERSION=4.6.1
AXE_CORE_VERSION=4.14.1
static=trainer_service/dashboard/static/vendor
tests=tests/browser/vendor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "chart.js@${CHARTJS_VERSION}" "axe-core@${AXE_CORE_VERSION}" >/dev/null)

mkdir -p "$static" "$tests"
tar -xzf "$work/chart.js-${CHARTJS_VERSION}.tgz" -C "$work" package/dist/chart.umd.min.js package/LICENSE.md
cp "$work/package/dist/chart.umd.min.js" "$static/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$static/chart.js.LICENSE.md"
sed -i '/^\/\/# sourceMappingURL=/d' "$static/chart.umd.min.js"  # the map is not shipped
rm -rf "$work/package"
tar -xzf "$work/axe-core-${AXE_CORE_VERSION}.tgz" -C "$work" package/axe.min.js package/LICENSE
cp "$work/package/axe.min.js" "$tests/axe.min.js"
cp "$work/package/LICENSE" "$tests/axe-core.LICENSE"
printf 'chart.js %s\n' "$CHARTJS_VERSION" >"$static/VERSIONS"
printf 'axe-core %s\n' "$AXE_CORE_VERSION" >"$tests/VERSIONS"
echo "vendored chart.js ${CHARTJS_VERSION} into $static, axe-core ${AXE_CORE_VERSION} into $tests"
