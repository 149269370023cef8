/**
 * A small declarative validator: one schema with defaults and a doc string per option, checked
 * once at start-up; every error names the option path (`proxy.routes[2].upstream must be an http
 * or https URL`) the way piscina and fastify do. Unknown options are refused, renamed ones with a
 * hint (undici `lib/dispatcher/client.js`).
 */
import { ConfigError } from '../errors.js'

export interface Field<T> {
  /** What the option does; rendered in docs/configuration.md. */
  doc: string
  parse(value: unknown, path: string): T
  /** Used when the option is absent. Absent and no default: the option is required. */
  default?: () => T
  /** What values are accepted, in words (`integer, 0 to 65535`); rendered in docs/configuration.md. */
  kind?: string
  /** Fields of an object option (set by `f.object` only). */
  shape?: Shape
  /** Field of each item of an array option (set by `f.array` only). */
  item?: Field<unknown>
  /** Name of the option that selects the variant (set by `f.tagged` only). */
  tagKey?: string
  /** Object field of each variant, by tag value (set by `f.tagged` only). */
  variants?: Record<string, Field<unknown>>
}

export type Shape = Record<string, Field<unknown>>
type Out<S extends Shape> = { readonly [K in keyof S]: S[K] extends Field<infer T> ? T : never }
/** `{ type: 'a', ...A } | { type: 'b', ...B }` for `f.tagged('…', 'type', { a: A, b: B })`. */
type Tagged<K extends string, V extends Record<string, Field<unknown>>> = {
  [T in keyof V & string]: { readonly [P in K]: T } & (V[T] extends Field<infer O> ? O : never)
}[keyof V & string]

function fail(path: string, what: string): never {
  throw new ConfigError(`${path || 'the configuration'} ${what}`)
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`
}

export const f = {
  string(doc: string, opts: { default?: string; pattern?: RegExp; patternHint?: string; nonEmpty?: boolean } = {}): Field<string> {
    return {
      doc,
      kind: opts.pattern ? `string; must ${opts.patternHint ?? `match ${opts.pattern}`}` : opts.nonEmpty === false ? 'string' : 'non-empty string',
      ...(opts.default !== undefined ? { default: () => opts.default! } : {}),
      parse(v, path) {
        if (typeof v !== 'string') fail(path, `must be a string, got ${describe(v)}`)
        if (opts.nonEmpty !== false && v.length === 0) fail(path, 'must not be empty')
        if (opts.pattern && !opts.pattern.test(v)) fail(path, `must ${opts.patternHint ?? `match ${opts.pattern}`}`)
        return v
      },
    }
  },
  optionalString(doc: string): Field<string | undefined> {
    return {
      doc,
      kind: 'string, optional',
      default: () => undefined,
      parse(v, path) {
        if (v === undefined || v === null) return undefined
        if (typeof v !== 'string' || v.length === 0) fail(path, `must be a non-empty string, got ${describe(v)}`)
        return v
      },
    }
  },
  int(doc: string, opts: { default?: number; min?: number; max?: number } = {}): Field<number> {
    return {
      doc,
      kind: `integer${opts.min !== undefined && opts.max !== undefined ? `, ${opts.min} to ${opts.max}` : opts.min !== undefined ? ` >= ${opts.min}` : opts.max !== undefined ? ` <= ${opts.max}` : ''}`,
      ...(opts.default !== undefined ? { default: () => opts.default! } : {}),
      parse(v, path) {
        if (typeof v !== 'number' || !Number.isInteger(v)) fail(path, `must be an integer, got ${describe(v)}`)
        if (opts.min !== undefined && v < opts.min) fail(path, `must be >= ${opts.min}, got ${v}`)
        if (opts.max !== undefined && v > opts.max) fail(path, `must be <= ${opts.max}, got ${v}`)
        return v
      },
    }
  },
  bool(doc: string, def: boolean): Field<boolean> {
    return {
      doc,
      kind: 'boolean',
      default: () => def,
      parse(v, path) {
        if (typeof v !== 'boolean') fail(path, `must be true or false, got ${describe(v)}`)
        return v
      },
    }
  },
  oneOf<T extends string>(doc: string, values: readonly T[], def: T): Field<T> {
    return {
      doc,
      kind: `one of ${values.join(', ')}`,
      default: () => def,
      parse(v, path) {
        if (typeof v !== 'string' || !values.includes(v as T)) fail(path, `must be one of ${values.join(', ')}, got ${describe(v)}`)
        return v as T
      },
    }
  },
  url(doc: string, opts: { default?: string; protocols?: string[]; originOnly?: boolean } = {}): Field<string> {
    const protocols = opts.protocols ?? ['https:']
    return {
      doc,
      kind: `${protocols.map((p) => p.slice(0, -1)).join(' or ')} URL`,
      ...(opts.default !== undefined ? { default: () => opts.default! } : {}),
      parse(v, path) {
        const names = protocols.map((p) => p.slice(0, -1)).join(' or ')
        if (typeof v !== 'string') fail(path, `must be an ${names} URL, got ${describe(v)}`)
        let u: URL
        try {
          u = new URL(v)
        } catch {
          fail(path, `must be an ${names} URL`)
        }
        if (!protocols.includes(u.protocol)) fail(path, `must be an ${names} URL`)
        if (u.username || u.password) fail(path, 'must not carry credentials')
        if (opts.originOnly && ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash)) fail(path, 'must be an origin without a path, query or fragment')
        if (!u.hostname) fail(path, 'must name a host')
        return v.replace(/\/+$/, '')
      },
    }
  },
  array<T>(doc: string, item: Field<T>, opts: { default?: () => T[]; minItems?: number; maxItems?: number } = {}): Field<T[]> {
    const count = opts.minItems !== undefined && opts.maxItems !== undefined ? `, ${opts.minItems} to ${opts.maxItems} items`
      : opts.minItems !== undefined ? `, at least ${opts.minItems} item(s)` : opts.maxItems !== undefined ? `, at most ${opts.maxItems} items` : ''
    return {
      doc,
      kind: `array of ${item.shape || item.variants ? 'objects' : (item.kind ?? 'values')}${count}`,
      item: item as Field<unknown>,
      ...(opts.default ? { default: opts.default } : {}),
      parse(v, path) {
        if (!Array.isArray(v)) fail(path, `must be an array, got ${describe(v)}`)
        if (opts.minItems !== undefined && v.length < opts.minItems) fail(path, `must have at least ${opts.minItems} item(s)`)
        if (opts.maxItems !== undefined && v.length > opts.maxItems) fail(path, `must have at most ${opts.maxItems} items`)
        return v.map((x, i) => item.parse(x, `${path}[${i}]`))
      },
    }
  },
  object<S extends Shape>(doc: string, shape: S, opts: {
    renamed?: Record<string, string>
    optional?: boolean
    /** Checks across options, after each was parsed; call `fail`-style: throw a ConfigError naming the path. */
    check?: (value: Out<S>, path: string) => void
  } = {}): Field<Out<S>> & { shape: S } {
    const field: Field<Out<S>> = {
      doc,
      kind: 'object',
      parse(v, path) {
        if (v === undefined && opts.optional !== false) v = {}
        if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, `must be an object, got ${describe(v)}`)
        const o = v as Record<string, unknown>
        for (const key of Object.keys(o)) {
          if (!(key in shape)) {
            const to = opts.renamed?.[key]
            const p = path ? `${path}.${key}` : key
            fail(p, to ? `was renamed to ${path ? `${path}.` : ''}${to}` : `is not a known option (known: ${Object.keys(shape).join(', ')})`)
          }
        }
        const out: Record<string, unknown> = {}
        for (const [key, fld] of Object.entries(shape)) {
          const p = path ? `${path}.${key}` : key
          if (o[key] === undefined) {
            if (fld.default) out[key] = fld.default()
            else if ('shape' in fld) out[key] = fld.parse(undefined, p)
            else fail(p, 'is required')
          } else {
            out[key] = fld.parse(o[key], p)
          }
        }
        opts.check?.(out as Out<S>, path)
        return out as Out<S>
      },
    }
    return Object.assign(field, { shape })
  },
  /**
   * One of several object variants, selected by the string option `tagKey` (`{ type: 'ldap', … }`):
   * each variant is an `f.object` without the tag; the parsed value carries the tag again.
   */
  tagged<K extends string, V extends Record<string, Field<unknown> & { shape: Shape }>>(doc: string, tagKey: K, variants: V): Field<Tagged<K, V>> {
    const names = Object.keys(variants)
    return {
      doc,
      kind: `object; \`${tagKey}\` is one of ${names.join(', ')}`,
      tagKey,
      variants,
      parse(v, path) {
        if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, `must be an object, got ${describe(v)}`)
        const { [tagKey]: tag, ...rest } = v as Record<string, unknown>
        const p = path ? `${path}.${tagKey}` : tagKey
        if (tag === undefined) fail(p, `is required (one of ${names.join(', ')})`)
        if (typeof tag !== 'string' || !Object.hasOwn(variants, tag)) fail(p, `must be one of ${names.join(', ')}, got ${describe(tag)}`)
        const known = [tagKey, ...Object.keys(variants[tag]!.shape)]
        for (const key of Object.keys(rest)) {
          if (!known.includes(key)) fail(path ? `${path}.${key}` : key, `is not a known option of ${tagKey} ${tag} (known: ${known.join(', ')})`)
        }
        return { [tagKey]: tag, ...(variants[tag]!.parse(rest, path) as object) } as Tagged<K, V>
      },
    }
  },
}

/** A ConfigError naming the option path (for `check` functions of `f.object`). */
export function configFail(path: string, what: string): never {
  return fail(path, what)
}

/**
 * The default of an option as text for the docs (JSON, so strings are quoted), or undefined when
 * the option has no default value of its own (required, optional without default, or an object
 * whose fields carry the defaults).
 */
export function defaultText(field: Field<unknown>): string | undefined {
  if (!field.default) return undefined
  const v = field.default()
  return v === undefined ? undefined : JSON.stringify(v)
}

/** Freeze a parsed config deeply: it is read-only after start-up. */
export function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v)
    for (const x of Object.values(v as object)) deepFreeze(x)
  }
  return v
}
