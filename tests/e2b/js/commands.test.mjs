import assert from 'node:assert/strict'
import { test } from 'node:test'

import { CommandExitError, InvalidArgumentError, NotFoundError } from 'e2b'

import { eventually, rejectsWith, sandbox } from './helpers.mjs'

test('foreground commands: output, envs, cwd, user, exit codes', async (t) => {
  const sbx = await sandbox(t, { envs: { GREETING: 'hello' } })
  const result = await sbx.commands.run('echo $GREETING from $(whoami) in $(pwd); echo oops >&2')
  assert.equal(result.exitCode, 0)
  assert.equal(result.stdout, 'hello from user in /home/user\n')
  assert.equal(result.stderr, 'oops\n')
  const root = await sbx.commands.run('echo $X $(id -u)', { envs: { X: 'x' }, cwd: '/tmp', user: 'root' })
  assert.equal(root.stdout, 'x 0\n')
  await assert.rejects(sbx.commands.run('echo partial; exit 3'), (err) => {
    assert.ok(err instanceof CommandExitError)
    assert.equal(err.exitCode, 3)
    assert.equal(err.stdout, 'partial\n')
    return true
  })
})

test('background commands stream, list, connect and kill', async (t) => {
  const sbx = await sandbox(t)
  const lines = []
  const handle = await sbx.commands.run('for i in 1 2 3; do echo line$i; sleep 0.2; done; sleep 60', {
    background: true,
    onStdout: (data) => lines.push(data),
  })
  assert.ok(handle.pid > 0)
  await eventually(() => lines.join('').includes('line3'))
  assert.equal(lines.join(''), 'line1\nline2\nline3\n')
  const listed = await sbx.commands.list()
  assert.ok(listed.some((p) => p.pid === handle.pid))

  const again = []
  const attached = await sbx.commands.connect(handle.pid, { onStdout: (data) => again.push(data) })
  assert.equal(attached.pid, handle.pid)
  assert.equal(await sbx.commands.kill(handle.pid), true)
  await assert.rejects(attached.wait(), CommandExitError)
  await assert.rejects(handle.wait(), (err) => err instanceof CommandExitError && err.exitCode === -1)
  assert.equal(await sbx.commands.kill(handle.pid), false)
})

test('a handle kills its own command', async (t) => {
  const sbx = await sandbox(t)
  const handle = await sbx.commands.run('sleep 60', { background: true })
  assert.equal(await handle.kill(), true)
  await assert.rejects(handle.wait(), CommandExitError)
})

test('errors are the SDK typed errors with cloche messages', async (t) => {
  const sbx = await sandbox(t)
  await rejectsWith(sbx.commands.run('pwd', { cwd: '/no/such/dir' }), InvalidArgumentError, 'chdir /no/such/dir')
  await rejectsWith(sbx.commands.run('pwd', { cwd: '/no/such/dir', background: true }), InvalidArgumentError,
    'chdir /no/such/dir')
  await rejectsWith(sbx.commands.run('true', { user: 'nobody-here' }), InvalidArgumentError, "'nobody-here'")
  await rejectsWith(sbx.commands.connect(999999), NotFoundError, 'process not found')
  await rejectsWith(sbx.commands.sendStdin(999999, 'x'), NotFoundError, 'process not found')
})
