// PostgreSQL through knex: the ledger of record (coupons, user_coupons).
import knex, { type Knex } from 'knex';
import pg from 'pg';
import { migrationSource } from './migrations.ts';

// int8 (bigint) columns come back as JS numbers: every count here is <= 10,000,000.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Db = Knex;

export function createDb(url: string, poolMax = 10): Db {
  return knex({
    client: 'pg',
    connection: { connectionString: url, application_name: 'coupon' },
    pool: { min: 0, max: poolMax },
    acquireConnectionTimeout: 5_000,
  });
}

/**
 * Applies pending migrations; safe to run from several processes (knex takes a lock). A database
 * already migrated by a newer release is accepted (migrations only add), so a rollback of the
 * service does not refuse to start.
 */
export async function migrate(db: Db): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource, tableName: 'knex_migrations', disableMigrationsListValidation: true })) as [number, string[]];
  return applied;
}
