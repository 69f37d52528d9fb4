/* CPython binding of the chunk engine: checks arguments, releases the GIL around kernel.c, returns offsets. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "kernel.h"

#define MAX_CHUNK_SIZE ((Py_ssize_t)64 << 20)
#define MIN_CHUNK_SIZE 64
#define CUTS_PER_BATCH 4096

/* Filled once at import; read-only afterwards, so threads may share it without the GIL. */
static uint64_t gear[256];

static PyObject *
zero_blocks(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t block_size;
    (void)module;

    if (!PyArg_ParseTuple(args, "y*n:zero_blocks", &view, &block_size))
        return NULL;
    if (block_size <= 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "block_size must be > 0");
        return NULL;
    }
    Py_ssize_t count = view.len / block_size + (view.len % block_size != 0);
    PyObject *result = PyBytes_FromStringAndSize(NULL, count);
    if (result != NULL) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        cbr_zero_blocks((const uint8_t *)view.buf, (size_t)view.len, (size_t)block_size, out);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    return result;
}

/* The page map of the pages of a that differ from b (same length): bit p of byte p/8 set for page p, the short last
 * page a page too; and how many differ. memcmp without the GIL: comparing a 1 MiB block's 256 pages through
 * memoryviews held the GIL for ~0.4 ms (DESIGN.md 3.2). */
static PyObject *
differing_pages(PyObject *module, PyObject *args)
{
    Py_buffer a, b;
    Py_ssize_t page;
    (void)module;

    if (!PyArg_ParseTuple(args, "y*y*n:differing_pages", &a, &b, &page))
        return NULL;
    if (page <= 0 || a.len != b.len) {
        PyErr_Format(PyExc_ValueError, "page must be > 0 and the buffers of one length (%zd, %zd)", a.len, b.len);
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        return NULL;
    }
    Py_ssize_t pages = a.len / page + (a.len % page != 0), changed = 0;
    PyObject *map = PyBytes_FromStringAndSize(NULL, (pages + 7) / 8);
    if (map != NULL) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(map);
        const char *x = a.buf, *y = b.buf;
        Py_BEGIN_ALLOW_THREADS
        memset(out, 0, (size_t)(pages + 7) / 8);
        for (Py_ssize_t p = 0; p < pages; p++) {
            Py_ssize_t start = p * page, n = a.len - start < page ? a.len - start : page;
            if (memcmp(x + start, y + start, (size_t)n) != 0) {
                out[p >> 3] |= (uint8_t)(1u << (p & 7));
                changed++;
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    if (map == NULL)
        return NULL;
    return Py_BuildValue("Nn", map, changed);
}

PyDoc_STRVAR(differing_pages_doc,
"differing_pages(a, b, page) -> (page_map: bytes, count)\n\n"
"Bit p (least significant first in byte p // 8) is set where page p of a differs from b; count of them.");

/* Copies without the GIL above this size: a pack's values are 128 KiB, and holding the GIL for each copy made
 * the append the data path's largest single holder of it (DESIGN.md 10.3). */
#define COPY_UNLOCKED_MIN ((Py_ssize_t)16 << 10)

static PyObject *
copy_into(PyObject *module, PyObject *args)
{
    Py_buffer dst, src;
    Py_ssize_t offset;
    (void)module;

    if (!PyArg_ParseTuple(args, "w*ny*:copy_into", &dst, &offset, &src))
        return NULL;
    if (offset < 0 || offset > dst.len || src.len > dst.len - offset) {
        PyErr_Format(PyExc_ValueError, "%zd bytes at offset %zd do not fit in a buffer of %zd", src.len, offset,
                     dst.len);
        PyBuffer_Release(&dst);
        PyBuffer_Release(&src);
        return NULL;
    }
    if (src.len >= COPY_UNLOCKED_MIN) {
        Py_BEGIN_ALLOW_THREADS
        memcpy((char *)dst.buf + offset, src.buf, (size_t)src.len);
        Py_END_ALLOW_THREADS
    } else if (src.len > 0) {
        memcpy((char *)dst.buf + offset, src.buf, (size_t)src.len);
    }
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    Py_RETURN_NONE;
}

static PyObject *
unfilled_bytearray(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_ssize_t size = PyLong_AsSsize_t(arg);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must be >= 0");
        return NULL;
    }
    return PyByteArray_FromStringAndSize(NULL, size);
}

static int
check_sizes(Py_ssize_t min_size, Py_ssize_t avg_size, Py_ssize_t max_size)
{
    if (min_size < MIN_CHUNK_SIZE) {
        PyErr_Format(PyExc_ValueError, "min_size must be >= %d, got %zd", MIN_CHUNK_SIZE, min_size);
        return -1;
    }
    if (avg_size < min_size || max_size < avg_size) {
        PyErr_Format(PyExc_ValueError, "need min_size <= avg_size <= max_size, got %zd, %zd, %zd",
                     min_size, avg_size, max_size);
        return -1;
    }
    if (max_size > MAX_CHUNK_SIZE) {
        PyErr_Format(PyExc_ValueError, "max_size must be <= %zd, got %zd", MAX_CHUNK_SIZE, max_size);
        return -1;
    }
    return 0;
}

static PyObject *
cdc_cuts(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"buf", "min_size", "avg_size", "max_size", "final", NULL};
    Py_buffer view;
    Py_ssize_t min_size, avg_size, max_size;
    int final = 0;
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*nnn|p:cdc_cuts", keywords, &view, &min_size,
                                     &avg_size, &max_size, &final))
        return NULL;
    if (check_sizes(min_size, avg_size, max_size) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    cbr_cdc_params params;
    cbr_cdc_params_init(&params, (size_t)min_size, (size_t)avg_size, (size_t)max_size, gear);

    PyObject *result = PyList_New(0);
    const uint8_t *data = (const uint8_t *)view.buf;
    size_t len = (size_t)view.len, base = 0;
    /* Batches keep the offsets' scratch space fixed whatever the buffer size. */
    size_t cuts[CUTS_PER_BATCH];
    while (result != NULL) {
        size_t n, consumed;
        Py_BEGIN_ALLOW_THREADS
        n = cbr_cdc_cuts(&params, data + base, len - base, final, cuts, CUTS_PER_BATCH, &consumed);
        Py_END_ALLOW_THREADS
        for (size_t i = 0; i < n; i++) {
            PyObject *offset = PyLong_FromSize_t(base + cuts[i]);
            if (offset == NULL || PyList_Append(result, offset) < 0) {
                Py_XDECREF(offset);
                Py_CLEAR(result);
                break;
            }
            Py_DECREF(offset);
        }
        base += consumed;
        if (n < CUTS_PER_BATCH)
            break;
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
gear_table(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *result = PyTuple_New(256);
    for (Py_ssize_t i = 0; result != NULL && i < 256; i++) {
        PyObject *value = PyLong_FromUnsignedLongLong(gear[i]);
        if (value == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyTuple_SET_ITEM(result, i, value);
    }
    return result;
}

PyDoc_STRVAR(zero_blocks_doc,
"zero_blocks(buf, block_size, /)\n--\n\n"
"One byte per block_size block of buf (the last may be shorter): 1 if all zero, else 0.");

PyDoc_STRVAR(cdc_cuts_doc,
"cdc_cuts(buf, min_size, avg_size, max_size, final=False)\n--\n\n"
"End offsets of the FastCDC chunks of buf. Without final the bytes after the last offset are\n"
"left uncut (they need more data); with final the last offset is len(buf).");

PyDoc_STRVAR(copy_into_doc,
"copy_into(dst, offset, src, /)\n--\n\n"
"Copies src into the writable buffer dst at offset (ValueError if it does not fit); large copies run\n"
"without the GIL.");

PyDoc_STRVAR(unfilled_bytearray_doc,
"unfilled_bytearray(size, /)\n--\n\n"
"A bytearray of size bytes that are not zeroed first: for a value its caller overwrites whole.");

PyDoc_STRVAR(gear_table_doc,
"gear_table()\n--\n\n"
"The 256 gear hash values, for tests.");

static PyMethodDef chunker_methods[] = {
    {"zero_blocks", zero_blocks, METH_VARARGS, zero_blocks_doc},
    {"differing_pages", differing_pages, METH_VARARGS, differing_pages_doc},
    {"cdc_cuts", (PyCFunction)(void (*)(void))cdc_cuts, METH_VARARGS | METH_KEYWORDS, cdc_cuts_doc},
    {"copy_into", copy_into, METH_VARARGS, copy_into_doc},
    {"unfilled_bytearray", unfilled_bytearray, METH_O, unfilled_bytearray_doc},
    {"gear_table", gear_table, METH_NOARGS, gear_table_doc},
    {NULL, NULL, 0, NULL},
};

static int
chunker_exec(PyObject *module)
{
    cbr_gear_table(gear);
    if (PyModule_AddIntConstant(module, "MIN_CHUNK_SIZE", MIN_CHUNK_SIZE) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "MAX_CHUNK_SIZE", (long)MAX_CHUNK_SIZE) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot chunker_slots[] = {
    {Py_mod_exec, (void *)chunker_exec},
    {0, NULL},
};

static struct PyModuleDef chunker_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cbr_backup.engine._chunker",
    .m_doc = "Zero-block scanning and FastCDC cutting in C (see kernel.h).",
    .m_size = 0,
    .m_methods = chunker_methods,
    .m_slots = chunker_slots,
};

PyMODINIT_FUNC
PyInit__chunker(void)
{
    return PyModuleDef_Init(&chunker_module);
}
