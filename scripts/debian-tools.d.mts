// Types for scripts/debian-tools.mjs, which bench/ imports.
export declare function onPath(name: string): string | undefined;
export declare function aptInstall(packages: string[], why?: string): void;
export declare function ensureDebianTool(binary: string, pkg: string): { path: string; how: 'found' | 'installed'; package: string };
