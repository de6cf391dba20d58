import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Sandbox, SandboxNotFoundError, Secret, SecretError, Template, TemplateError, Volume, VolumeError } from 'e2b'

import { rejectsWith, sandbox } from './helpers.mjs'

test('create with metadata, getInfo, setTimeout, metrics', async (t) => {
  const before = Date.now()
  const sbx = await sandbox(t, { metadata: { who: 'js', run: '1' }, timeoutMs: 60_000 })
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.templateId, 'base')
  assert.deepEqual(info.metadata, { who: 'js', run: '1' })
  assert.equal(info.state, 'running')
  assert.ok(Math.abs(info.endAt - before - 60_000) < 15_000, `endAt ${info.endAt}`)
  await sbx.setTimeout(600_000)
  assert.ok((await sbx.getInfo()).endAt - Date.now() > 500_000)
  assert.equal(await sbx.isRunning(), true)
  const metrics = await sbx.getMetrics()
  assert.equal(metrics.length, 1)
  assert.ok(metrics[0].memTotal > 0 && metrics[0].cpuCount >= 1 && metrics[0].diskTotal > 0)
})

test('list pages and filters by metadata', async (t) => {
  const tag = `js-${Date.now()}`
  const made = await Promise.all([0, 1, 2].map((i) => sandbox(t, { metadata: { tag, i: String(i) } })))
  const paginator = Sandbox.list({ query: { metadata: { tag } }, limit: 2 })
  const first = await paginator.nextItems()
  assert.equal(first.length, 2)
  assert.equal(paginator.hasNext, true)
  const second = await paginator.nextItems()
  assert.equal(second.length, 1)
  assert.equal(paginator.hasNext, false)
  assert.deepEqual(new Set([...first, ...second].map((s) => s.sandboxId)), new Set(made.map((s) => s.sandboxId)))
  const one = await Sandbox.list({ query: { metadata: { tag, i: '1' } } }).nextItems()
  assert.deepEqual(one.map((s) => s.sandboxId), [made[1].sandboxId])
})

test('pause keeps files, connect resumes', async (t) => {
  const sbx = await sandbox(t)
  await sbx.files.write('/home/user/kept.txt', 'still here')
  assert.equal(await sbx.pause(), true)
  assert.equal((await sbx.getInfo()).state, 'paused')
  assert.equal(await sbx.isRunning(), false)
  const paused = await Sandbox.list({ query: { state: ['paused'] } }).nextItems()
  assert.ok(paused.some((s) => s.sandboxId === sbx.sandboxId))
  const again = await Sandbox.connect(sbx.sandboxId)
  assert.equal((await again.getInfo()).state, 'running')
  assert.equal(await again.files.read('/home/user/kept.txt'), 'still here')
  assert.equal((await again.commands.run('echo awake')).stdout, 'awake\n')
})

test('kill, and what is left of a killed sandbox', async (t) => {
  const sbx = await sandbox(t)
  await sbx.kill()
  assert.equal(await sbx.isRunning(), false)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError)
  await assert.rejects(Sandbox.connect(sbx.sandboxId), SandboxNotFoundError)
})

test('fork and snapshots', async (t) => {
  const sbx = await sandbox(t)
  await sbx.files.write('/home/user/forked.txt', 'same files')
  const forks = await sbx.fork({ count: 1 })
  assert.equal(forks.length, 1)
  assert.ok(forks[0] instanceof Sandbox, String(forks[0]))
  t.after(() => forks[0].kill().catch(() => {}))
  assert.equal(await forks[0].files.read('/home/user/forked.txt'), 'same files')
  const snap = await sbx.createSnapshot({ name: `js-snap-${Date.now()}` })
  const listed = await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems()
  assert.ok(listed.some((s) => s.snapshotId === snap.snapshotId))
  const fromSnap = await sandbox(t, { template: snap.snapshotId })
  assert.equal(await fromSnap.files.read('/home/user/forked.txt'), 'same files')
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
  assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false)
})

test('what cloche does not serve is a readable error', async () => {
  await rejectsWith(Secret.list().nextItems(), SecretError, "400: E2B's secrets API is not supported by cloche")
  await rejectsWith(Template.exists('anything'), TemplateError, "400: E2B's template build API is not supported")
  await rejectsWith(Volume.create('data'), VolumeError, '400: E2B volumes are not supported by cloche')
})
