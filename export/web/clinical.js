// facederm web: the clinical answers a model with clinical fields takes as its second input, encoded in the page
// exactly as facederm.runtime.clinical.ClinicalSchema.encode_one encodes them (the schema travels in the model
// card inside the model file). Fields in the schema's order, each as its value columns then one missing column:
//   number    (value - mean) / std         missing: values 0, flag 1
//   bool      0 (false) or 1 (true)        missing: values 0, flag 1
//   category  one-hot over the categories  missing: values 0, flag 1
// An unanswered field is a state of its own, never an error; a field the schema lacks or a value that does not fit
// its field is refused with a message naming it.

export const TRUE_WORDS = ["true", "t", "yes", "y", "1", "1.0"];
export const FALSE_WORDS = ["false", "f", "no", "n", "0", "0.0"];
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function fieldWidth(field) {
  return (field.kind === "category" ? field.categories.length : 1) + 1;
}

/** F: the length of one encoded record (the graph input ``clinical`` is float32 [N, F]). */
export function clinicalWidth(schema) {
  return schema.fields.reduce((total, field) => total + fieldWidth(field), 0);
}

function isMissing(value, schema) {
  if (value === null || value === undefined) return true;
  if (typeof value === "number" && Number.isNaN(value)) return true;
  const tokens = (schema.missing_tokens || []).map((t) => t.trim().toUpperCase());
  return typeof value === "string" && tokens.includes(value.trim().toUpperCase());
}

function show(value) {
  const text = typeof value === "string" ? JSON.stringify(value) : String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** ``value`` checked against ``field`` -> a number, a boolean, a category name, or null (unanswered). */
export function parseAnswer(field, value, schema) {
  if (isMissing(value, schema)) return null;
  const where = `clinical field "${field.name}"`;
  if (field.kind === "number") {
    const number = typeof value === "number" ? value
      : typeof value === "string" && DECIMAL.test(value.trim()) ? Number(value.trim()) : NaN;
    if (typeof value === "boolean" || Number.isNaN(number)) throw new Error(`${where}: ${show(value)} is not a number`);
    if (!Number.isFinite(number)) throw new Error(`${where}: ${show(value)} is not a finite number`);
    return number;
  }
  if (field.kind === "bool") {
    if (typeof value === "boolean") return value;
    const text = typeof value === "string" || typeof value === "number" ? String(value).trim().toLowerCase() : "";
    if (TRUE_WORDS.includes(text)) return true;
    if (FALSE_WORDS.includes(text)) return false;
    throw new Error(`${where}: ${show(value)} is not true/false (or yes/no, 1/0)`);
  }
  if (typeof value !== "string" && !Number.isInteger(value)) {
    throw new Error(`${where}: ${show(value)} is not a category name`);
  }
  const text = String(value).trim().toLowerCase();
  const found = field.categories.find((c) => c.trim().toLowerCase() === text);
  if (found === undefined) {
    throw new Error(`${where}: ${show(value)} is not a category seen in training (known: ${field.categories.join(", ")})`);
  }
  return found;
}

/** float32 [F] for one record ({field: value}; absent fields are unanswered), as ClinicalSchema.encode_one. */
export function encodeClinical(schema, answers = {}) {
  const names = schema.fields.map((f) => f.name);
  for (const key of Object.keys(answers || {})) {
    if (!names.includes(key)) {
      throw new Error(`clinical field "${key}" is not in this model's schema; fields: ${names.join(", ")}`);
    }
  }
  const out = new Float32Array(clinicalWidth(schema));
  let start = 0;
  for (const field of schema.fields) {
    const width = fieldWidth(field);
    const value = parseAnswer(field, (answers || {})[field.name], schema);
    if (value === null) out[start + width - 1] = 1;
    else if (field.kind === "number") out[start] = (value - field.mean) / field.std;
    else if (field.kind === "bool") out[start] = value ? 1 : 0;
    else out[start + field.categories.indexOf(value)] = 1;
    start += width;
  }
  return out;
}
