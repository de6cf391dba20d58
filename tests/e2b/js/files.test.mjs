import assert from 'node:assert/strict'
import { test } from 'node:test'

import { FileNotFoundError, FilesystemEventType, InvalidArgumentError } from 'e2b'

import { eventually, rejectsWith, sandbox } from './helpers.mjs'

test('write, read, list, rename and remove', async (t) => {
  const sbx = await sandbox(t)
  const info = await sbx.files.write('/home/user/notes/a.txt', 'hi there')
  assert.equal(info.path, '/home/user/notes/a.txt')
  assert.equal(await sbx.files.read('/home/user/notes/a.txt'), 'hi there')
  const bytes = await sbx.files.read('/home/user/notes/a.txt', { format: 'bytes' })
  assert.deepEqual(Buffer.from(bytes), Buffer.from('hi there'))
  await sbx.files.write([
    { path: '/home/user/notes/b.txt', data: 'b' },
    { path: '/home/user/notes/c.bin', data: new Uint8Array([0, 1, 2]).buffer },
  ])
  const listed = await sbx.files.list('/home/user/notes')
  assert.deepEqual(listed.map((e) => e.name).sort(), ['a.txt', 'b.txt', 'c.bin'])
  assert.ok(listed.every((e) => e.type === 'file'))
  assert.equal((await sbx.commands.run('cat notes/b.txt; stat -c %U notes/c.bin')).stdout, 'buser\n')
  await sbx.files.makeDir('/home/user/notes/sub')
  await sbx.files.rename('/home/user/notes/b.txt', '/home/user/notes/sub/b.txt')
  assert.equal((await sbx.files.getInfo('/home/user/notes/sub')).type, 'dir')
  assert.equal(await sbx.files.exists('/home/user/notes/b.txt'), false)
  await sbx.files.remove('/home/user/notes')
  assert.equal(await sbx.files.exists('/home/user/notes/a.txt'), false)
})

test('watchDir reports changes', async (t) => {
  const sbx = await sandbox(t)
  await sbx.files.makeDir('/home/user/watched')
  const events = []
  const watch = await sbx.files.watchDir('/home/user/watched', (e) => events.push(e))
  t.after(() => watch.stop())
  await sbx.files.write('/home/user/watched/new.txt', 'x')
  await eventually(() => events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.CREATE))
  await sbx.files.remove('/home/user/watched/new.txt')
  await eventually(() => events.some((e) => e.name === 'new.txt' && e.type === FilesystemEventType.REMOVE))
})

test('errors are the SDK typed errors with cloche messages', async (t) => {
  const sbx = await sandbox(t)
  await rejectsWith(sbx.files.read('/home/user/missing.txt'), FileNotFoundError, 'missing.txt')
  await rejectsWith(sbx.files.list('/home/user/missing-dir'), FileNotFoundError, 'missing-dir')
  await rejectsWith(sbx.files.read('/home/user'), InvalidArgumentError, 'is a directory')
  await rejectsWith(sbx.files.watchDir('/home/user/missing-dir', () => {}), FileNotFoundError, 'missing-dir')
  await rejectsWith(sbx.files.watchDir('/etc/hostname', () => {}), InvalidArgumentError, 'not a directory')
})
