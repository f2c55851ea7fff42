// Types for scripts/promtool.mjs, which the alert rules' test imports.
export declare function ensurePrometheusTools(): { promtool: string; prometheus: string };
