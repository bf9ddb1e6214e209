// Column encryption with kmsgw and node-postgres: the application encrypts a column through
// the gateway (ENC) before INSERT and decrypts it (DEC) after SELECT. PostgreSQL only ever
// holds envelopes, and neither it nor the application holds the key.
//
//   node examples/column-encryption.mjs [postgres-url] [kmsgw-socket]
//
// postgres-url: else $DATABASE_URL, else libpq's PGHOST, PGPORT, PGUSER... variables.
// kmsgw-socket: else $KMSGW_SOCKET, else .kmsgw/kmsgw.sock. The key is created on first use
// under the development default (keys.autoCreate); elsewhere: `kmsgw key create app/users.email`.
import pg from 'pg';
// An application writes `import { createClient } from 'kmsgw'`. Inside this repository that
// name does not resolve, so this imports the built client (`npm run build` first).
import { createClient } from '../dist/src/index.js';

const [connectionString = process.env.DATABASE_URL, socketPath = process.env.KMSGW_SOCKET || '.kmsgw/kmsgw.sock'] = process.argv.slice(2);

const KEY_ID = 'app/users.email';
// The AAD names the column and the row's primary key: an envelope copied into another row
// (or column) no longer decrypts.
const aad = (id) => Buffer.from(`users.email:${id}`);

const users = [
  [1, 'alice@example.com'],
  [2, 'bob@example.com'],
  [3, 'carol@example.com'],
];

const db = new pg.Client({ connectionString });
await db.connect();
const kms = await createClient({ socketPath });
try {
  await db.query('create table if not exists example_users (id integer primary key, email bytea not null)');

  // Requests are pipelined on one connection: issue them all, then await them together.
  const sealed = await Promise.all(users.map(([id, email]) => kms.enc(KEY_ID, Buffer.from(email), aad(id))));
  for (const [i, [id]] of users.entries()) {
    await db.query('insert into example_users (id, email) values ($1, $2) on conflict (id) do update set email = excluded.email', [
      id,
      sealed[i],
    ]);
  }

  // bytea comes back as a Buffer: the envelope, as stored.
  const { rows } = await db.query('select id, email from example_users order by id');
  for (const row of rows) {
    const email = await kms.dec(KEY_ID, row.email, aad(row.id));
    console.log(`user ${row.id}: ${email.toString('utf8')} (stored as ${row.email.length} bytes of envelope)`);
  }

  // Row 1's envelope read as if it were row 2's: refused.
  try {
    await kms.dec(KEY_ID, rows[0].email, aad(2));
    console.log('row 1 envelope as row 2: decrypted (this must not happen)');
  } catch (err) {
    console.log(`row 1 envelope as row 2: ${err.code}`);
  }
} finally {
  await kms.close();
  await db.end();
}
