// `npm start`: brings the stack up, then runs coupon-api and coupon-issuer in the foreground with
// readable logs. Ctrl-C stops both (the stack keeps running; `npm run stack:down` stops it).
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { up } from './stack.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
try {
  await up();
} catch (err) {
  console.error(`[start] ${err.message}`);
  process.exit(1);
}

const env = { ...process.env, LOG_PRETTY: process.env.LOG_PRETTY ?? 'true' };
const children = ['api', 'issuer'].map((name) => {
  const child = spawn(process.execPath, [join(root, 'src', 'bin', `${name}.ts`)], { cwd: root, env, stdio: 'inherit' });
  child.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`[start] coupon-${name} exited (${signal ?? code}); stopping the other one`);
      stop(code ?? 1);
    }
  });
  return child;
});

let stopping = false;
function stop(code = 0) {
  stopping = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  Promise.all(children.map((c) => c.exitCode !== null ? null : new Promise((r) => c.once('exit', r)))).then(() => process.exit(code));
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

const port = process.env.API_PORT ?? '8080';
setTimeout(() => console.log(`
  coupon-api is starting on http://127.0.0.1:${port} (gRPC, gRPC-Web and Connect on one port)

    npx buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:${port}/grpc.health.v1.Health/Check
    npx buf curl --http2-prior-knowledge --list-methods http://127.0.0.1:${port}
    grpcurl -plaintext 127.0.0.1:${port} list coupon.v1.CouponService

  Ctrl-C stops coupon-api and coupon-issuer; \`npm run stack:down\` stops Kafka and the registry.
`), 3000).unref();
