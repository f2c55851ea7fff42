// `npm run migrate`: applies the ledger migrations and exits.
import { loadConfig } from '../config.ts';
import { createDb, migrate } from '../store/db.ts';

const config = loadConfig();
const db = createDb(config.DATABASE_URL);
try {
  const applied = await migrate(db);
  console.log(applied.length ? `[migrate] applied ${applied.join(', ')}` : '[migrate] schema is up to date');
} finally {
  await db.destroy();
}
