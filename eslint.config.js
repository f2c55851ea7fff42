// ESLint flat config: typescript-eslint's recommended type-checked rules over every TypeScript file
// (src, test, bench, chaos, fuzz, scripts, the vitest configs).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The house (docs/architecture.md#layers): which folder of src/ may import which. Each folder gets one
// rule listing the folders it must not import.
const FEATURES = ['gate', 'issuer', 'redemption', 'catalog', 'ops', 'client'];
const FORBIDDEN = {
  // Only server/ and bin/ know the API server.
  gate: ['server', 'issuer'],
  issuer: ['server', 'gate'],
  redemption: ['server'],
  catalog: ['server'],
  ops: ['server'],
  client: ['server'],
  metrics: ['server'],
  telemetry: ['server'],
  domain: ['server'],
  lib: ['server'],
  // The stores and the event plumbing serve the features and know none of them.
  store: ['server', ...FEATURES],
  events: ['server', ...FEATURES],
};
function layers() {
  return Object.entries(FORBIDDEN).map(([folder, banned]) => ({
    files: [`src/${folder}/**/*.ts`],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: `^\\.\\./(${banned.join('|')})/`, message: `src/${folder} must not import src/{${banned.join(',')}} (docs/architecture.md#layers)` }],
      }],
    },
  }));
}

// scripts/: the process primitives (proc.ts) import nothing of the project, the single-node stack
// (stack.ts) knows nothing of the clustered one, and no module imports a command, whose top level
// runs as soon as it is loaded.
const SCRIPT_COMMANDS = ['stack-cli', 'start', 'test', 'test-cluster', 'token', 'config-docs', 'check-links'];
const commandImport = { regex: `^\\./(${SCRIPT_COMMANDS.join('|')})\\.ts$`, message: 'scripts/: a command is run (npm run …), not imported' };
function scriptLayers() {
  const banned = (...patterns) => ({ rules: { 'no-restricted-imports': ['error', { patterns }] } });
  return [
    { files: ['scripts/*.ts'], ...banned(commandImport) },
    { files: ['scripts/stack.ts'], ...banned(commandImport, { regex: '^\\./cluster-stack\\.ts$', message: 'scripts/stack.ts must not know the clustered stack (scripts/cluster-stack.ts builds on it)' }) },
    { files: ['scripts/proc.ts'], ...banned({ regex: '^\\.', message: 'scripts/proc.ts holds process primitives only and imports nothing of the project' }) },
  ];
}

export default tseslint.config(
  { ignores: ['gen/**', 'node_modules/**', '.stack/**', 'coverage/**'] },
  js.configs.recommended,
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      // kafkajs documents destructuring resolveOffset/heartbeat/commitOffsetsIfNecessary from the
      // eachBatch payload; its types declare them as methods, which this rule cannot tell apart.
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  ...layers(),
  ...scriptLayers(),
  {
    // The one script in plain JavaScript: it runs on the system Node before node_modules exists.
    files: ['scripts/ensure-install.mjs', 'eslint.config.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', fetch: 'readonly', AbortSignal: 'readonly', setTimeout: 'readonly' } },
  },
);
