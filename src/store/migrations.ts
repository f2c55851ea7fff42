// The ledger of record. Migrations live in code (not files) so they run the same from `npm start`,
// `npm test` and the packaged service, with no loader configuration.
import type { Knex } from 'knex';

interface Migration { name: string; up: (db: Knex) => Promise<void>; down: (db: Knex) => Promise<void> }

const migrations: Migration[] = [
  {
    name: '001_coupons_and_user_coupons',
    async up(db) {
      await db.schema.createTable('coupons', (t) => {
        t.uuid('id').primary();
        t.text('name').notNullable();
        t.bigInteger('total_quantity').notNullable();
        t.bigInteger('discount_amount').notNullable().defaultTo(0);
        t.timestamp('opens_at', { useTz: true }).notNullable();
        t.timestamp('closes_at', { useTz: true }).nullable();
        t.timestamp('valid_until', { useTz: true }).nullable();
        t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        // Maintained by the issuer, one UPDATE per coupon per batch.
        t.bigInteger('issued_count').notNullable().defaultTo(0);
        t.timestamp('completed_at', { useTz: true }).nullable();
      });
      await db.raw('ALTER TABLE coupons ADD CONSTRAINT coupons_total_quantity_range CHECK (total_quantity BETWEEN 1 AND 10000000)');
      await db.raw('ALTER TABLE coupons ADD CONSTRAINT coupons_issued_le_total CHECK (issued_count <= total_quantity)');

      await db.schema.createTable('user_coupons', (t) => {
        t.uuid('coupon_id').notNullable().references('id').inTable('coupons');
        t.text('user_id').notNullable();
        t.bigInteger('seq').notNullable();
        t.timestamp('requested_at', { useTz: true }).notNullable();
        t.timestamp('issued_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.text('order_id').nullable();
        t.timestamp('redeemed_at', { useTz: true }).nullable();
        // Version of the last redemption change applied (events carry it); older events are ignored.
        t.bigInteger('redemption_version').notNullable().defaultTo(0);
        // I2: at most one coupon per (coupon, user).
        t.primary(['coupon_id', 'user_id']);
        // I1 backstop: seqs are 1..total and each is held by one user.
        t.unique(['coupon_id', 'seq']);
      });
      await db.raw('ALTER TABLE user_coupons ADD CONSTRAINT user_coupons_seq_positive CHECK (seq >= 1)');
      await db.raw('CREATE INDEX user_coupons_user_idx ON user_coupons (user_id, issued_at DESC, coupon_id)');
    },
    async down(db) {
      await db.schema.dropTableIfExists('user_coupons');
      await db.schema.dropTableIfExists('coupons');
    },
  },
  {
    // Orders whose redemption was cancelled, so a late redeem of one is refused even after Redis
    // lost its cancelled set (I5). Written by the redemption ledger consumer.
    name: '002_redemption_cancellations',
    async up(db) {
      await db.schema.createTable('redemption_cancellations', (t) => {
        t.uuid('coupon_id').notNullable().references('id').inTable('coupons');
        t.text('user_id').notNullable();
        t.text('order_id').notNullable();
        t.timestamp('cancelled_at', { useTz: true }).notNullable();
        t.primary(['coupon_id', 'user_id', 'order_id']);
      });
    },
    async down(db) {
      await db.schema.dropTableIfExists('redemption_cancellations');
    },
  },
  {
    // Every record sent to a dead-letter topic, until it is replayed. A coupon with unreplayed dead
    // letters still owns their seqs (issue) or their changes (redemption): rebuilding its Redis
    // state without them could hand a seq out twice (docs/design.md#redis-loses-everything).
    name: '003_dead_letters',
    async up(db) {
      await db.schema.createTable('dead_letters', (t) => {
        t.text('topic').notNullable();
        t.integer('partition').notNullable();
        t.bigInteger('offset').notNullable();
        // The record's key: the coupon id on the issue and redemption topics; null elsewhere.
        t.text('coupon_id').nullable();
        t.text('reason').notNullable();
        t.timestamp('dead_lettered_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.timestamp('replayed_at', { useTz: true }).nullable();
        t.primary(['topic', 'partition', 'offset']);
      });
      await db.raw('CREATE INDEX dead_letters_unreplayed_idx ON dead_letters (topic, coupon_id) WHERE replayed_at IS NULL');
    },
    async down(db) {
      await db.schema.dropTableIfExists('dead_letters');
    },
  },
  {
    // Slots the gate gave back after a failed publish. Redis keeps its tombstone only while it lives;
    // this copy outlives a Redis loss, so the issuer can still drop the released record if it lands
    // (issuer/issue-batch.ts, when the gate is unarmed). requested_at tells a released reservation
    // from the same user's later one with the same seq.
    name: '004_gate_releases',
    async up(db) {
      await db.schema.createTable('gate_releases', (t) => {
        t.uuid('coupon_id').notNullable().references('id').inTable('coupons');
        t.text('user_id').notNullable();
        t.bigInteger('seq').notNullable();
        t.timestamp('requested_at', { useTz: true }).notNullable();
        t.timestamp('released_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.primary(['coupon_id', 'user_id', 'seq', 'requested_at']);
      });
    },
    async down(db) {
      await db.schema.dropTableIfExists('gate_releases');
    },
  },
  {
    // What a dead letter claims, and how a person resolved one that can never be replayed.
    // user_id and seq: the (user, seq) an issue record asks for, so a rebuild can tell a dead letter
    // that can never own its seq (out of range, or the seq or the user already in user_coupons) and
    // need not wait for it; null when unknown (undecodable, other topics, recorded before this).
    // discarded_*: `npm run dlt:discard` records who gave one up, why and when; a discarded dead
    // letter blocks no rebuild and is never replayed.
    name: '005_dead_letter_resolution',
    async up(db) {
      await db.schema.alterTable('dead_letters', (t) => {
        t.text('user_id').nullable();
        t.bigInteger('seq').nullable();
        t.timestamp('discarded_at', { useTz: true }).nullable();
        t.text('discarded_by').nullable();
        t.text('discard_reason').nullable();
      });
      await db.raw('ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_discard_complete CHECK ((discarded_at IS NULL) = (discarded_by IS NULL) AND (discarded_at IS NULL) = (discard_reason IS NULL))');
    },
    async down(db) {
      await db.schema.alterTable('dead_letters', (t) => {
        t.dropChecks(['dead_letters_discard_complete']);
        t.dropColumns('user_id', 'seq', 'discarded_at', 'discarded_by', 'discard_reason');
      });
    },
  },
  {
    // Operating a sale (docs/operations.md#change-a-live-sale): paused_at is set by PauseCoupon and
    // cleared by ResumeCoupon; coupon_changes records every operator change, who made it, and the
    // coupon's fields before and after, in the transaction that makes the change.
    name: '006_coupon_changes',
    async up(db) {
      await db.schema.alterTable('coupons', (t) => {
        t.timestamp('paused_at', { useTz: true }).nullable();
      });
      await db.schema.createTable('coupon_changes', (t) => {
        t.bigIncrements('id').primary();
        t.uuid('coupon_id').notNullable().references('id').inTable('coupons').onDelete('CASCADE');
        t.text('action').notNullable();
        t.text('changed_by').notNullable();
        t.jsonb('before').notNullable();
        t.jsonb('after').notNullable();
        t.timestamp('changed_at', { useTz: true }).notNullable().defaultTo(db.fn.now());
        t.index(['coupon_id', 'changed_at']);
      });
      await db.raw("ALTER TABLE coupon_changes ADD CONSTRAINT coupon_changes_action CHECK (action IN ('UPDATE', 'PAUSE', 'RESUME', 'CLOSE'))");
    },
    async down(db) {
      await db.schema.dropTable('coupon_changes');
      await db.schema.alterTable('coupons', (t) => { t.dropColumn('paused_at'); });
    },
  },
  {
    // Two migrations carry 006: knex tracks them by name, and databases already hold both names.
    // ListCoupons reads coupons newest created first, ties broken by id (catalog/coupon-list.ts).
    name: '006_coupons_created_index',
    async up(db) {
      await db.raw('CREATE INDEX coupons_created_idx ON coupons (created_at DESC, id DESC)');
    },
    async down(db) {
      await db.raw('DROP INDEX IF EXISTS coupons_created_idx');
    },
  },
  {
    // The outbox of coupon.v1.issued (docs/architecture.md#announcing-issued-coupons): one row per
    // user_coupons row, written by the statement that inserts it (store/ledger.ts), deleted once
    // Kafka acknowledged its CouponIssued. A row left here is an announcement still owed. Coupons
    // issued before this migration are never announced. No foreign key: the row lives for
    // milliseconds, and the statement that writes it has just written its ledger row.
    name: '007_coupon_issued_outbox',
    async up(db) {
      await db.schema.createTable('coupon_issued_outbox', (t) => {
        t.uuid('coupon_id').notNullable();
        t.text('user_id').notNullable();
        t.bigInteger('seq').notNullable();
        // The ledger row's issued_at: also how long the announcement has been owed.
        t.timestamp('issued_at', { useTz: true }).notNullable();
        t.primary(['coupon_id', 'user_id']);
      });
    },
    async down(db) {
      await db.schema.dropTableIfExists('coupon_issued_outbox');
    },
  },
  {
    // The issue topic's fences (docs/decisions/0010-rebuild-only-from-settled-facts.md): once the
    // issuer has passed a rebuild's fence, a record behind it that was reserved before
    // `stale_before` was never acknowledged, and the ledger drops it while Redis cannot judge it
    // (store/ledger.ts). One row per coupon, the latest fence's.
    name: '008_coupon_fences',
    async up(db) {
      await db.schema.createTable('coupon_fences', (t) => {
        t.uuid('coupon_id').primary();
        t.timestamp('stale_before', { useTz: true }).notNullable();
      });
    },
    async down(db) {
      await db.schema.dropTableIfExists('coupon_fences');
    },
  },
  {
    // The redemption topic's fences, as coupon_fences is the issue topic's: once the ledger
    // consumer has passed a load's fence, a change behind it made before `stale_before` was never
    // acknowledged, and the ledger drops it (redemption/ledger.ts). One row per coupon.
    name: '009_redemption_fences',
    async up(db) {
      await db.schema.createTable('redemption_fences', (t) => {
        t.uuid('coupon_id').primary();
        t.timestamp('stale_before', { useTz: true }).notNullable();
      });
    },
    async down(db) {
      await db.schema.dropTableIfExists('redemption_fences');
    },
  },
];

export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: () => Promise.resolve(migrations),
  getMigrationName: (m) => m.name,
  getMigration: (m) => Promise.resolve({ up: m.up, down: m.down }),
};
