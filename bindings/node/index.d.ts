// Type declarations of the taskhost Node.js client (index.js).
/// <reference types="node" />
import { EventEmitter } from 'node:events';

export type TaskState =
  'error' | 'timeout' | 'cancelled' | 'rejected' | 'crashed' | 'memory';

export type Input = Buffer | Uint8Array | ArrayBuffer | ArrayBufferView | string;

export interface RunOptions {
  /** Cancels the task; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Seconds the task may run; only lowers the pool's task_timeout. */
  timeout?: number;
  /** Seconds the task may wait queued; only lowers the pool's. */
  queueTimeout?: number;
  /** -128..127, higher first. */
  priority?: number;
  /** Called as the plugin reports progress (coalesced by the daemon). */
  onProgress?: (done: number, total: number, message: string) => void;
}

export interface ProgressReport {
  done: number;
  total: number;
  message: string;
}

/** A task that did not end ok. */
export class TaskError extends Error {
  readonly state: TaskState | string;
  /** 0, a TH_E* code, or the plugin's own code for 'error'. */
  readonly code: number;
  /** The daemon's id of the task, 0 when it never took it. */
  readonly taskId: number;
  /** The daemon's or the plugin's message. */
  readonly reason: string;
}

/** The connection was lost before the answer came. */
export class ConnectionLost extends TaskError {}

/** A refused control request. */
export class ControlError extends Error {
  readonly code: number;
  readonly reason: string;
}

export class Client extends EventEmitter {
  /** Runs a task and resolves with its output. */
  run(pool: string, task: string, input?: Input, opts?: RunOptions): Promise<Buffer>;
  /** Yields progress reports as they come, then { output } last. */
  runWithProgress(pool: string, task: string, input?: Input,
                  opts?: Omit<RunOptions, 'onProgress'>):
    AsyncGenerator<ProgressReport | { output: Buffer }, void, undefined>;
  stats(pool?: string, format?: 'json'): Promise<any>;
  stats(pool: string | undefined, format: 'text' | 'prometheus'): Promise<string>;
  restart(pool?: string, opts?: { force?: boolean }): Promise<void>;
  reload(): Promise<void>;
  shutdown(opts?: { force?: boolean }): Promise<void>;
  ping(): Promise<string>;
  /** Requests not answered yet. */
  readonly pending: number;
  /** Closes the connection; waiting tasks reject with ConnectionLost. */
  close(): void;
  on(event: 'lost', listener: (err: ConnectionLost) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** Connects to taskhostd at path (default: $TASKHOST_SOCKET, else
 * "taskhost.sock"). */
export function connect(path?: string): Promise<Client>;

export function defaultSocket(): string;
