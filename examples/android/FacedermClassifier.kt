// facederm on Android: ONNX Runtime Mobile on the exported model.ort (facederm-export RUN --target onnx).
// A sample, not a library: it cannot be compiled in facederm's CI (no Android SDK); see ../README.md.
// Gradle: implementation("com.microsoft.onnxruntime:onnxruntime-android:<version>") and
// implementation("androidx.exifinterface:exifinterface:<version>"); put model.ort in src/main/assets/.
// facederm output is decision support for clinicians, not a diagnosis.
package org.facederm.sample

import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import androidx.exifinterface.media.ExifInterface
import org.json.JSONArray
import org.json.JSONObject
import java.io.ByteArrayInputStream
import java.nio.FloatBuffer
import kotlin.math.ceil
import kotlin.math.max
import kotlin.math.min

/** The bundled model's contract: the README's PAD-UFES-20 EfficientNet-Lite0 (tests/test_web_examples.py checks these
 *  equal the card facederm exports for it). At load, they are checked against the model's own metadata. */
object FacedermModelConstants {
    const val INPUT_NAME = "image"            // float32 NCHW RGB 0-255: the graph normalizes itself
    const val OUTPUT_NAME = "probabilities"   // softmax over LABELS
    const val INPUT_SIZE = 300                // center crop
    const val RESIZE_SHORTER = 300            // shorter side resized to this first (bilinear, as PIL)
    val MEAN = floatArrayOf(0.5f, 0.5f, 0.5f) // inside the graph; listed to check the card
    val STD = floatArrayOf(0.5f, 0.5f, 0.5f)
    val LABELS = listOf("AK", "BCC", "MEL", "NEV", "SCC", "SK")
    const val METADATA_LABELS = "labels"      // ONNX metadata_props written by facederm-export
    const val METADATA_PREPROCESSING = "preprocessing"
    const val NOT_A_DIAGNOSIS = "facederm output is decision support for clinicians, not a diagnosis."
}

class FacedermClassifier(modelBytes: ByteArray) : AutoCloseable {
    private val env = OrtEnvironment.getEnvironment()
    private val session: OrtSession = env.createSession(modelBytes, OrtSession.SessionOptions())
    val labels: List<String>

    init {
        // Labels and preprocessing travel inside the model: refuse a model that is not the one these constants describe.
        val meta = session.metadata.customMetadata
        val fromModel = JSONArray(meta[FacedermModelConstants.METADATA_LABELS] ?: error("no facederm labels in the model"))
        labels = List(fromModel.length()) { fromModel.getString(it) }
        check(labels == FacedermModelConstants.LABELS) { "model labels $labels != ${FacedermModelConstants.LABELS}" }
        val pre = JSONObject(meta[FacedermModelConstants.METADATA_PREPROCESSING] ?: error("no preprocessing in the model"))
        check(pre.getInt("crop") == FacedermModelConstants.INPUT_SIZE && pre.getInt("resize_shorter") == FacedermModelConstants.RESIZE_SHORTER)
        check(pre.getString("interpolation") == "bilinear") { "this sample implements the bilinear resize only" }
    }

    /** Probabilities per label for one photo file's bytes (JPEG/PNG), EXIF orientation applied. */
    fun classify(photo: ByteArray): Map<String, Float> {
        val rgb = prepare(photo)
        val size = FacedermModelConstants.INPUT_SIZE.toLong()
        OnnxTensor.createTensor(env, FloatBuffer.wrap(rgb), longArrayOf(1, 3, size, size)).use { input ->
            session.run(mapOf(FacedermModelConstants.INPUT_NAME to input)).use { out ->
                @Suppress("UNCHECKED_CAST")
                val probs = (out.get(FacedermModelConstants.OUTPUT_NAME).get().value as Array<FloatArray>)[0]
                return labels.zip(probs.toList()).toMap()
            }
        }
    }

    override fun close() = session.close()

    companion object {
        /** facederm.runtime's prepare_image: EXIF, RGB, shorter side bilinear (PIL's filter), center crop, NCHW 0-255. */
        fun prepare(photo: ByteArray): FloatArray {
            var bitmap = BitmapFactory.decodeByteArray(photo, 0, photo.size) ?: error("not an image")
            val degrees = ExifInterface(ByteArrayInputStream(photo)).rotationDegrees
            if (degrees != 0) bitmap = Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height,
                Matrix().apply { postRotate(degrees.toFloat()) }, false)
            val w = bitmap.width; val h = bitmap.height
            val px = IntArray(w * h).also { bitmap.getPixels(it, 0, w, 0, 0, w, h) }
            val shorter = FacedermModelConstants.RESIZE_SHORTER
            val scale = shorter.toDouble() / min(w, h)
            val newW = max(shorter, Math.rint(w * scale).toInt())  // rint: Python's round half to even
            val newH = max(shorter, Math.rint(h * scale).toInt())
            val crop = FacedermModelConstants.INPUT_SIZE
            val left = (newW - crop) / 2; val top = (newH - crop) / 2
            // Pillow's order: vertical first when the height shrinks by over twice as many pixels as the width.
            val resized = if (newH < h && (h - newH) > 2 * (w - newW)) {
                pass(pass(px, w, h, newH, vertical = true), w, newH, newW, vertical = false)
            } else pass(pass(px, w, h, newW, vertical = false), newW, h, newH, vertical = true)
            val out = FloatArray(3 * crop * crop)
            for (y in 0 until crop) for (x in 0 until crop) {
                val p = resized[(y + top) * newW + x + left]
                val i = y * crop + x
                out[i] = ((p shr 16) and 255).toFloat()
                out[crop * crop + i] = ((p shr 8) and 255).toFloat()
                out[2 * crop * crop + i] = (p and 255).toFloat()
            }
            return out
        }

        // One pass of Pillow's bilinear resample (antialiased, 22-bit fixed-point weights) along one axis.
        private fun pass(src: IntArray, w: Int, h: Int, outSize: Int, vertical: Boolean): IntArray {
            val inSize = if (vertical) h else w
            if (outSize == inSize) return src
            val scale = inSize.toDouble() / outSize
            val filterScale = max(scale, 1.0)
            val support = filterScale  // bilinear support 1.0
            val ksize = ceil(support).toInt() * 2 + 1
            val bounds = IntArray(outSize * 2); val kk = IntArray(outSize * ksize)
            for (o in 0 until outSize) {
                val center = (o + 0.5) * scale
                val xmin = max(0, (center - support + 0.5).toInt())
                val xmax = min(inSize, (center + support + 0.5).toInt()) - xmin
                val ws = DoubleArray(xmax) { val d = kotlin.math.abs((it + xmin - center + 0.5) / filterScale); if (d < 1.0) 1.0 - d else 0.0 }
                val total = ws.sum()
                for (k in 0 until xmax) { val v = if (total != 0.0) ws[k] / total else ws[k]
                    kk[o * ksize + k] = (if (v < 0) -0.5 + v * (1 shl 22) else 0.5 + v * (1 shl 22)).toInt() }
                bounds[o * 2] = xmin; bounds[o * 2 + 1] = xmax
            }
            val outW = if (vertical) w else outSize; val outH = if (vertical) outSize else h
            val out = IntArray(outW * outH)
            for (y in 0 until outH) for (x in 0 until outW) {
                val o = if (vertical) y else x
                var r = 1 shl 21; var g = 1 shl 21; var b = 1 shl 21
                for (k in 0 until bounds[o * 2 + 1]) {
                    val s = bounds[o * 2] + k
                    val p = if (vertical) src[s * w + x] else src[y * w + s]
                    val c = kk[o * ksize + k]
                    r += ((p shr 16) and 255) * c; g += ((p shr 8) and 255) * c; b += (p and 255) * c
                }
                fun clip(v: Int) = min(255, max(0, v shr 22))
                out[y * outW + x] = (255 shl 24) or (clip(r) shl 16) or (clip(g) shl 8) or clip(b)
            }
            return out
        }
    }
}
