/* The chunk encoder: the stored values of a batch of blocks (probe, zstd with the vault dictionary, AES-256-GCM)
 * made in one call without the GIL. The byte layout is chunk_codec.py's (services/backup/DESIGN.md, "Stored
 * values"); chunk_codec.py decodes what this writes. Per-block Python around three library calls held the GIL
 * for about half of a full backup, so two cores could not both compress (DESIGN.md 10.4). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <string.h>
#include <sys/random.h>

#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createCDict_advanced, ZSTD_dct_rawContent, ZSTD_c_forceAttachDict */
#include <zstd.h>
#include <zstd_errors.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>

#define FLAG_ZSTD 0x01
#define FLAG_ENCRYPTED 0x02
#define FLAG_DICT 0x04
#define ID_SIZE 32
#define KEY_SIZE 32
#define NONCE_SIZE 12
#define TAG_SIZE 16
#define DICT_TAG_SIZE 4
#define ENVELOPE (1 + NONCE_SIZE + TAG_SIZE) /* what sealing adds to a payload */

typedef struct {
    PyObject_HEAD
    ZSTD_CCtx *cctx;       /* the value's frame, the vault dictionary attached (not copied) when there is one */
    ZSTD_CCtx *probe;      /* level 1 on two small samples: is the block worth compressing? */
    ZSTD_CDict *cdict;     /* NULL without a dictionary */
    EVP_CIPHER_CTX *aead;  /* NULL for an unencrypted vault */
    uint32_t dict_tag;
    Py_ssize_t probe_size, probe_min, probe_limit;
    PyThread_type_lock busy; /* a zstd context serves one call at a time */
} Encoder;

static int
set_params(ZSTD_CCtx *cctx, const ZSTD_compressionParameters *p)
{
    const int values[][2] = {
        {ZSTD_c_windowLog, (int)p->windowLog},   {ZSTD_c_chainLog, (int)p->chainLog},
        {ZSTD_c_hashLog, (int)p->hashLog},       {ZSTD_c_searchLog, (int)p->searchLog},
        {ZSTD_c_minMatch, (int)p->minMatch},     {ZSTD_c_targetLength, (int)p->targetLength},
        {ZSTD_c_strategy, (int)p->strategy},
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx, (ZSTD_cParameter)values[i][0], values[i][1])))
            return -1;
    return 0;
}

static int
Encoder_init(Encoder *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"level", "dictionary", "dict_tag", "window_log", "hash_log", "min_match", "enc_key",
                            "probe_size", "probe_min", "probe_limit", NULL};
    int level, window_log = 0, hash_log = 0, min_match = 0;
    unsigned long dict_tag = 0;
    Py_buffer dict = {0}, key = {0};
    Py_ssize_t probe_size = 4096, probe_min = 16384, probe_limit = 3973;

    if (self->cctx != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|$z*kiiiz*nnn:Encoder", names, &level, &dict, &dict_tag,
                                     &window_log, &hash_log, &min_match, &key, &probe_size, &probe_min,
                                     &probe_limit))
        return -1;
    int ok = 0;
    if (key.buf != NULL && key.len != KEY_SIZE) {
        PyErr_Format(PyExc_ValueError, "enc_key must be %d bytes", KEY_SIZE);
        goto done;
    }
    if (probe_size <= 0 || probe_min < 2 * probe_size || probe_limit < 0 || dict_tag > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_ValueError, "bad probe sizes or dictionary tag");
        goto done;
    }
    self->busy = PyThread_allocate_lock();
    self->cctx = ZSTD_createCCtx();
    self->probe = ZSTD_createCCtx();
    if (self->busy == NULL || self->cctx == NULL || self->probe == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (ZSTD_isError(ZSTD_CCtx_setParameter(self->probe, ZSTD_c_compressionLevel, 1))
        || ZSTD_isError(ZSTD_CCtx_setParameter(self->probe, ZSTD_c_contentSizeFlag, 0))) {
        PyErr_SetString(PyExc_ValueError, "zstd refused the probe's parameters");
        goto done;
    }
    ZSTD_compressionParameters params = ZSTD_getCParams(level, 0, 0);
    if (window_log) params.windowLog = (unsigned)window_log;
    if (hash_log) params.hashLog = (unsigned)hash_log;
    if (min_match) params.minMatch = (unsigned)min_match;
    if (ZSTD_isError(ZSTD_checkCParams(params)) || set_params(self->cctx, &params) < 0) {
        PyErr_SetString(PyExc_ValueError, "zstd refused the compression parameters");
        goto done;
    }
    if (dict.buf != NULL) {
        /* Raw content whatever its first bytes are: decoders load it as DICT_TYPE_RAWCONTENT too. */
        self->cdict = ZSTD_createCDict_advanced(dict.buf, (size_t)dict.len, ZSTD_dlm_byCopy, ZSTD_dct_rawContent,
                                                params, ZSTD_defaultCMem);
        /* Attached, as a streamed frame of unknown size gets it: with the size known (128 KiB) zstd would copy
         * its 512 KiB hash table into the context for every block (section 2.2 of DESIGN.md). */
        if (self->cdict == NULL || ZSTD_isError(ZSTD_CCtx_refCDict(self->cctx, self->cdict))
            || ZSTD_isError(ZSTD_CCtx_setParameter(self->cctx, ZSTD_c_forceAttachDict, ZSTD_dictForceAttach))) {
            PyErr_SetString(PyExc_ValueError, "zstd refused the dictionary");
            goto done;
        }
        self->dict_tag = (uint32_t)dict_tag;
    }
    if (key.buf != NULL) {
        self->aead = EVP_CIPHER_CTX_new();
        if (self->aead == NULL
            || EVP_EncryptInit_ex(self->aead, EVP_aes_256_gcm(), NULL, (const unsigned char *)key.buf, NULL) != 1) {
            PyErr_SetString(PyExc_ValueError, "OpenSSL refused the AES-256-GCM key");
            goto done;
        }
    }
    self->probe_size = probe_size;
    self->probe_min = probe_min;
    self->probe_limit = probe_limit;
    ok = 1;
done:
    if (dict.buf != NULL) PyBuffer_Release(&dict);
    if (key.buf != NULL) PyBuffer_Release(&key);
    return ok ? 0 : -1;
}

static void
Encoder_dealloc(Encoder *self)
{
    ZSTD_freeCCtx(self->cctx);
    ZSTD_freeCCtx(self->probe);
    ZSTD_freeCDict(self->cdict);
    if (self->aead != NULL) EVP_CIPHER_CTX_free(self->aead);
    if (self->busy != NULL) PyThread_free_lock(self->busy);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Both samples (start and middle) shrink by less than the limit: random or already compressed data. */
static int
incompressible(Encoder *self, const uint8_t *data, size_t len, uint8_t *scratch, size_t scratch_size)
{
    if ((Py_ssize_t)len < self->probe_min)
        return 0;
    const size_t starts[2] = {0, len / 2};
    for (int i = 0; i < 2; i++) {
        size_t n = ZSTD_compress2(self->probe, scratch, scratch_size, data + starts[i], (size_t)self->probe_size);
        if (!ZSTD_isError(n) && (Py_ssize_t)n <= self->probe_limit)
            return 0;
    }
    return 1;
}

static int
seal(EVP_CIPHER_CTX *aead, uint8_t flags, const uint8_t *digest, const uint8_t *payload, size_t len, uint8_t *out)
{
    uint8_t aad[1 + ID_SIZE];
    int n;
    out[0] = flags;
    if (getrandom(out + 1, NONCE_SIZE, 0) != NONCE_SIZE)
        return -1;
    aad[0] = flags;
    memcpy(aad + 1, digest, ID_SIZE);
    uint8_t *body = out + 1 + NONCE_SIZE;
    if (EVP_EncryptInit_ex(aead, NULL, NULL, NULL, out + 1) != 1
        || EVP_EncryptUpdate(aead, NULL, &n, aad, (int)sizeof aad) != 1
        || EVP_EncryptUpdate(aead, body, &n, payload, (int)len) != 1
        || EVP_EncryptFinal_ex(aead, body + len, &n) != 1
        || EVP_CIPHER_CTX_ctrl(aead, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, body + len) != 1)
        return -1;
    return 0;
}

#define SEAL_FAILED (-1)
#define ZSTD_FAILED (-2)

/* One block's stored value at out (room for len + ENVELOPE bytes); its length, or SEAL_FAILED (OpenSSL or
 * getrandom) or ZSTD_FAILED (anything but "does not fit", which leaves the block bare). The frame is written
 * where it is stored, so a compressed value is sealed in place. */
static Py_ssize_t
encode_one(Encoder *self, const uint8_t *data, size_t len, const uint8_t *digest, uint8_t *out, uint8_t *scratch,
           size_t scratch_size)
{
    const int sealed = self->aead != NULL;
    const size_t head = 1 + (sealed ? NONCE_SIZE : 0); /* the payload starts here */
    const size_t tag = self->cdict != NULL ? DICT_TAG_SIZE : 0;
    uint8_t flags = sealed ? FLAG_ENCRYPTED : 0;
    if (!incompressible(self, data, len, scratch, scratch_size) && len > 1 + tag + 1) {
        /* Kept only when 1 + tag + frame < len, so the room given is one byte short of that. */
        size_t room = len - 1 - tag - 1;
        size_t n = ZSTD_compress2(self->cctx, out + head + tag, room, data, len);
        if (!ZSTD_isError(n)) {
            flags |= FLAG_ZSTD | (tag ? FLAG_DICT : 0);
            if (tag) {
                uint32_t t = self->dict_tag;
                for (int i = 0; i < 4; i++) out[head + i] = (uint8_t)(t >> (8 * i)); /* u32 little-endian */
            }
            if (!sealed) {
                out[0] = flags;
                return (Py_ssize_t)(1 + tag + n);
            }
            if (seal(self->aead, flags, digest, out + head, tag + n, out) < 0)
                return SEAL_FAILED;
            return (Py_ssize_t)(ENVELOPE + tag + n);
        }
        if (ZSTD_getErrorCode(n) != ZSTD_error_dstSize_tooSmall)
            return ZSTD_FAILED;
        ZSTD_CCtx_reset(self->cctx, ZSTD_reset_session_only); /* "does not fit": ready for the next block */
    }
    if (!sealed) {
        memcpy(out, data, len); /* bare: the plaintext itself, no header */
        return (Py_ssize_t)len;
    }
    if (seal(self->aead, flags, digest, data, len, out) < 0)
        return SEAL_FAILED;
    return (Py_ssize_t)(ENVELOPE + len);
}

static PyObject *
Encoder_encode(Encoder *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t block_size;
    PyObject *blocks_arg, *digests_arg;
    if (self->cctx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*nOO:encode", &view, &block_size, &blocks_arg, &digests_arg))
        return NULL;
    PyObject *blocks = NULL, *digests = NULL, *out = NULL, *ends = NULL, *result = NULL;
    Py_ssize_t *starts = NULL, *lengths = NULL, *sizes = NULL;
    uint8_t *ids = NULL; /* the digests, copied: the caller's list could change while the GIL is released */
    uint8_t *scratch = NULL;
    int locked = 0;

    blocks = PySequence_Fast(blocks_arg, "blocks must be a sequence of block numbers");
    digests = blocks ? PySequence_Fast(digests_arg, "digests must be a sequence of 32-byte ids") : NULL;
    if (digests == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(blocks);
    if (block_size <= 0 || block_size > INT_MAX - ENVELOPE || count != PySequence_Fast_GET_SIZE(digests)) {
        PyErr_SetString(PyExc_ValueError, "block_size must be > 0 and there must be one digest per block");
        goto done;
    }
    starts = PyMem_Malloc(sizeof *starts * (size_t)(count + 1));
    lengths = PyMem_Malloc(sizeof *lengths * (size_t)(count + 1));
    sizes = PyMem_Malloc(sizeof *sizes * (size_t)(count + 1));
    ids = PyMem_Malloc((size_t)ID_SIZE * (size_t)(count + 1));
    if (starts == NULL || lengths == NULL || sizes == NULL || ids == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t capacity = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t j = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(blocks, i));
        if (j == -1 && PyErr_Occurred())
            goto done;
        if (j < 0 || j > view.len / block_size || (j > 0 && j * block_size == view.len)) { /* block 0 may be empty */
            PyErr_Format(PyExc_ValueError, "block %zd is outside the %zd-byte buffer", j, view.len);
            goto done;
        }
        PyObject *digest = PySequence_Fast_GET_ITEM(digests, i);
        if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) != ID_SIZE) {
            PyErr_Format(PyExc_ValueError, "digest %zd is not %d bytes", i, ID_SIZE);
            goto done;
        }
        memcpy(ids + (size_t)i * ID_SIZE, PyBytes_AS_STRING(digest), ID_SIZE);
        starts[i] = j * block_size;
        lengths[i] = Py_MIN(block_size, view.len - starts[i]);
        capacity += lengths[i] + ENVELOPE;
    }
    out = PyByteArray_FromStringAndSize(NULL, capacity); /* not zeroed: every byte returned is written */
    ends = PyList_New(count);
    size_t scratch_size = ZSTD_compressBound((size_t)self->probe_size);
    scratch = PyMem_Malloc(scratch_size);
    if (out == NULL || ends == NULL || scratch == NULL) {
        if (scratch == NULL) PyErr_NoMemory();
        goto done;
    }
    if (!PyThread_acquire_lock(self->busy, NOWAIT_LOCK)) {
        PyErr_SetString(PyExc_RuntimeError, "an Encoder serves one thread at a time");
        goto done;
    }
    locked = 1;
    uint8_t *base = (uint8_t *)PyByteArray_AS_STRING(out);
    Py_ssize_t at = 0, failed = -1, why = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n = encode_one(self, (const uint8_t *)view.buf + starts[i], (size_t)lengths[i],
                                  ids + (size_t)i * ID_SIZE,
                                  base + at, scratch, scratch_size);
        if (n < 0) {
            failed = i;
            why = n;
            break;
        }
        sizes[i] = n;
        at += n;
    }
    Py_END_ALLOW_THREADS
    if (failed >= 0) {
        if (why == ZSTD_FAILED)
            PyErr_Format(PyExc_RuntimeError, "zstd failed on block %zd", failed);
        else
            PyErr_Format(PyExc_OSError, "sealing block %zd failed (OpenSSL or getrandom: %s)", failed,
                         strerror(errno));
        goto done;
    }
    if (PyByteArray_Resize(out, at) < 0) /* a piece's values often take a third of the room they were given */
        goto done;
    at = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        at += sizes[i];
        PyObject *end = PyLong_FromSsize_t(at);
        if (end == NULL)
            goto done;
        PyList_SET_ITEM(ends, i, end);
    }
    result = Py_BuildValue("(OO)", out, ends);
done:
    if (locked) PyThread_release_lock(self->busy);
    PyMem_Free(scratch);
    PyMem_Free(starts);
    PyMem_Free(lengths);
    PyMem_Free(sizes);
    PyMem_Free(ids);
    Py_XDECREF(out);
    Py_XDECREF(ends);
    Py_XDECREF(blocks);
    Py_XDECREF(digests);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(Encoder_doc,
"Encoder(level, *, dictionary=None, dict_tag=0, window_log=0, hash_log=0, min_match=0, enc_key=None,\n"
"        probe_size=4096, probe_min=16384, probe_limit=3973)\n--\n\n"
"Makes stored values as chunk_codec.ChunkCodec.encode does: zstd at level (its window, hash and minimum match\n"
"where given), with the raw-content dictionary (named by dict_tag) when given; blocks of at least\n"
"probe_min bytes whose two probe_size samples do not compress to probe_limit bytes are left bare; sealed with\n"
"AES-256-GCM under enc_key. One thread at a time (RuntimeError otherwise): keep one per thread.");

PyDoc_STRVAR(Encoder_encode_doc,
"encode(buf, block_size, blocks, digests, /)\n--\n\n"
"The stored values of the given blocks of buf (block numbers; the last block of buf may be short), each\n"
"with its 32-byte id, made without the GIL: (values, ends), the values back to back in one bytearray and the\n"
"end offset of each.");

static PyMethodDef Encoder_methods[] = {
    {"encode", (PyCFunction)Encoder_encode, METH_VARARGS, Encoder_encode_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cbr_backup.engine._codec.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Encoder_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

static int
codec_exec(PyObject *module)
{
    if (PyType_Ready(&EncoderType) < 0)
        return -1;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(module, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(&EncoderType);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot codec_slots[] = {
    {Py_mod_exec, codec_exec},
    {0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_codec",
    .m_doc = "The chunk encoder (zstd, AES-256-GCM) for batches of blocks, without the GIL.",
    .m_size = 0,
    .m_slots = codec_slots,
};

PyMODINIT_FUNC
PyInit__codec(void)
{
    return PyModuleDef_Init(&codec_module);
}
